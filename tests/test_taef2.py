"""The bundled TAEF2 autoencoder: reconstruction quality on real footage (the shipped Big Buck
Bunny excerpt) and on the shapes world, exact weight coverage, shapes and ranges, one-line
errors, and prepare -> train -> generate on TAEF2 latents."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from media import ffmpeg
from safetensors.torch import load_file, save_file

from univid.autoencoder import BUILTIN, BUILTIN_RATIOS, TAEF2Autoencoder, load_autoencoder
from univid.autoencoder.taef2 import (
    LATENT_STD,
    WEIGHTS,
    build_decoder,
    build_encoder,
)
from univid.cli import main
from univid.config import resolve_config
from univid.data.cache import CacheDataset
from univid.data.decode import ClipSpec, probe, read_clip
from univid.data.shapes import ShapesWorld
from univid.errors import CorruptFileError, InputError
from univid.video import to_uint8

BBB = Path(__file__).parent / "data" / "bigbuckbunny-excerpt.mp4"


@pytest.fixture(scope="module")
def taef2() -> TAEF2Autoencoder:
    ae = load_autoencoder("taef2")
    assert isinstance(ae, TAEF2Autoencoder)
    return ae


def bbb_frames(count: int, height: int, width: int) -> np.ndarray:
    """uint8 (1, count, height, width, 3): frames spread over the excerpt, read by univid."""
    stride = (probe(BBB).frames - 1) // (count - 1)
    return read_clip(BBB, ClipSpec(count, height, width, fps=25.0, stride=stride))[None]


def to_video(clips: np.ndarray) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> (B, 3, T, H, W) in [-1, 1], as prepare and training make it."""
    return torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def psnr(clips: np.ndarray, ae: TAEF2Autoencoder) -> float:
    """PSNR (dB) of the uint8 video decode(encode(clips)) against ``clips``."""
    back = to_uint8(ae.decode(ae.encode(to_video(clips))))
    mse = np.mean((back.astype(np.float64) - clips.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


# -- quality -------------------------------------------------------------------------------------


def test_reconstructs_real_footage(taef2):
    """The 320x180 excerpt scaled to 256x144: measured 30.5 dB over 12 frames (29.9 at worst);
    at its own scale (176x320 centre crop, H.264 CRF 26 blocking included) 29.7 dB."""
    assert psnr(bbb_frames(4, 144, 256), taef2) >= 30.0
    assert psnr(bbb_frames(3, 176, 320), taef2) >= 29.0


@pytest.mark.parametrize("size, floor", [(64, 30.0), (32, 30.0)])
def test_reconstructs_the_shapes_world(taef2, size, floor):
    """Measured: 36.7 dB at 64x64 (latents 8x8), 31.3 dB at 32x32 (latents 4x4)."""
    clips, _ = ShapesWorld(4, size, size, seed=0).batch(range(6))
    assert psnr(clips, taef2) >= floor


# -- weights -------------------------------------------------------------------------------------


@pytest.mark.parametrize("half, build", [("encoder", build_encoder), ("decoder", build_decoder)])
def test_every_tensor_is_used_and_nothing_is_missing(half, build):
    stored = load_file(WEIGHTS / f"taef2_{half}.safetensors")
    net = build()
    assert set(net.state_dict()) == set(stored)
    assert all(net.state_dict()[k].shape == v.shape for k, v in stored.items())
    assert 1_330_000 < sum(p.numel() for p in net.parameters()) < 1_350_000


def test_the_mit_notice_ships_with_the_weights():
    assert "MIT License" in (WEIGHTS / "LICENSE").read_text(encoding="utf-8")
    assert "Ollin Boer Bohan" in (WEIGHTS / "README.md").read_text(encoding="utf-8")


def _copy_weights(tmp_path: Path) -> Path:
    folder = tmp_path / "taef2"
    shutil.copytree(WEIGHTS, folder)
    return folder


def test_a_missing_renamed_or_extra_tensor_is_refused_in_one_line(tmp_path):
    folder = _copy_weights(tmp_path)
    path = folder / "taef2_encoder.safetensors"
    state = load_file(path)
    state["11.pool.9.weight"] = state.pop("11.pool.3.weight")  # renamed
    save_file(state, path)
    with pytest.raises(InputError) as err:
        TAEF2Autoencoder(folder)
    message = str(err.value)
    assert "\n" not in message and "1 missing, 1 unexpected" in message, message

    del state["11.pool.9.weight"]  # missing only
    save_file(state, path)
    with pytest.raises(InputError, match="1 missing, 0 unexpected"):
        TAEF2Autoencoder(folder)

    state["11.pool.3.weight"] = torch.full((64, 256, 1, 1), float("nan"), dtype=torch.float16)
    save_file(state, path)  # complete, but not finite
    with pytest.raises(CorruptFileError, match="not finite"):
        TAEF2Autoencoder(folder)

    path.write_bytes(b"\x00" * 64)  # damaged
    with pytest.raises(CorruptFileError):
        TAEF2Autoencoder(folder)


# -- shapes, ranges, errors ----------------------------------------------------------------------


def test_encode_decode_shapes_range_and_scale(taef2):
    video = to_video(bbb_frames(3, 144, 256))  # (1, 3, 3, 144, 256)
    latents = taef2.encode(video)
    assert latents.shape == (1, 32, 3, 18, 32) and latents.dtype == torch.float32
    assert taef2.latent_shape(3, 144, 256) == (3, 18, 32)
    # normalised latents of real frames are near zero mean and unit variance
    assert abs(latents.mean().item()) < 0.1 and 0.8 < latents.std().item() < 1.25
    back = taef2.decode(latents)
    assert back.shape == video.shape and back.dtype == torch.float32
    assert back.min() >= -1.0 and back.max() <= 1.0
    # frame-wise: each frame's latent is the encoding of that frame alone
    alone = taef2.encode(video[:, :, 1:2])
    torch.testing.assert_close(alone, latents[:, :, 1:2], atol=1e-4, rtol=1e-4)
    info = taef2.describe()
    assert info["spec"] == "taef2" and info["channels"] == 32 and info["spatial_ratio"] == 8
    assert info["normalisation"] == {"formula": "z / latents_std", "latents_std": LATENT_STD}


def test_sizes_not_multiple_of_8_are_one_clear_line(taef2):
    with pytest.raises(InputError) as err:
        taef2.check_shape(4, 60, 64)
    message = str(err.value)
    assert "\n" not in message and "height must be a multiple of 8 (e.g. 56 or 64)" in message
    with pytest.raises(InputError, match="width must be a multiple of 8"):
        taef2.encode(torch.zeros(1, 3, 1, 64, 36))


def test_builtin_names_are_one_list():
    assert BUILTIN == ("pixel", "taef2") and set(BUILTIN_RATIOS) == set(BUILTIN)
    from univid.memory import tokens

    cfg = resolve_config("tiny", ["data.autoencoder=taef2", "model.patch=1,2,2"])
    assert tokens(cfg, 4, 64, 64)[0] == 4 * 4 * 4  # 4 latent frames of 8x8, patch 1x2x2


# -- end to end ----------------------------------------------------------------------------------


def test_prepare_train_generate_with_taef2(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    captions = {"meadow": "a green meadow", "tree": "a tree on a hill", "bird": "a bird"}
    for start, (name, text) in enumerate(captions.items()):
        out = src / f"{name}.mp4"
        ffmpeg(
            "-ss", str(1.5 * start), "-i", str(BBB), "-t", "1", "-an",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast", str(out),
        )  # fmt: skip
        (src / f"{name}.txt").write_text(text, encoding="utf-8")
    cache = tmp_path / "cache"
    args = ["prepare", str(src), "--out", str(cache), "--autoencoder", "taef2"]
    assert main([*args, "--frames", "4", "--height", "64", "--width", "64"]) == 0
    ds = CacheDataset(cache)
    assert ds.channels == 32 and len(ds) == 3
    assert ds.latent_shapes == {(4, 64, 64): (32, 4, 8, 8)}
    assert ds.index["autoencoder"]["spec"] == "taef2"

    run = tmp_path / "run"
    overrides = [f"data.cache={cache}", "model.patch=1,2,2", "train.steps=2", "train.batch_size=2"]
    assert main(["train", "tiny", "--out", str(run), *overrides, "train.sample_every=0"]) == 0
    out = tmp_path / "x.gif"
    assert main(["generate", "a bird", "--model", str(run), "--out", str(out), "--steps", "2"]) == 0
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3)
    capsys.readouterr()
