"""Autoencoders: the pixel identity and the five diffusers VAE families.

No weights ship offline, so each family is a tiny randomly initialised model (tests/tiny_models.py)
saved with safetensors and loaded through ``load_autoencoder(folder)``, the path users take.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F
from tiny_models import LTX_MEAN, LTX_STD, TINY, build_tiny, save_tiny, save_tiny_wan

from univid.autoencoder import (
    SUPPORTED,
    Autoencoder,
    DiffusersAutoencoder,
    PixelAutoencoder,
    load_autoencoder,
)
from univid.errors import CorruptFileError, InputError

needs_diffusers = pytest.mark.skipif(
    importlib.util.find_spec("diffusers") is None, reason="needs the diffusers package"
)

KINDS = list(TINY)
FRAMES = {"wan": 5, "ltx": 5, "cogvideox": 9, "hunyuan": 5, "kl": 3}  # valid frame counts
SIZE = 32

# (mean per channel, std per channel, scaling_factor) each tiny config normalises with
EXPECTED_NORM = {
    "wan": (TINY["wan"][1]["latents_mean"], TINY["wan"][1]["latents_std"], 1.0),
    "ltx": (LTX_MEAN, LTX_STD, 0.7),
    "cogvideox": ([0.0] * 4, [1.0] * 4, 1.15258426),
    "hunyuan": ([0.0] * 4, [1.0] * 4, 0.476986),
    "kl": ([0.1159] * 4, [1.0] * 4, 0.3611),
}
# Small tiles that fit a 64x64 video exactly (CogVideoX's tiler needs its latent stride to match).
_SMALL = dict(
    tile_sample_min_height=48,
    tile_sample_min_width=48,
    tile_sample_stride_height=32,
    tile_sample_stride_width=32,
)
TILES = {
    "wan": _SMALL,
    "ltx": _SMALL,
    "hunyuan": _SMALL,
    "cogvideox": dict(
        tile_sample_min_height=48,
        tile_sample_min_width=48,
        tile_overlap_factor_height=1 / 6,
        tile_overlap_factor_width=1 / 6,
    ),
    "kl": dict(tile_sample_min_size=48, tile_overlap_factor=1 / 3),
}


def _video(frames: int, size: int = SIZE, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=gen) * 2 - 1


def _raw_encode(ref: torch.nn.Module, kind: str, video: torch.Tensor) -> torch.Tensor:
    """What the diffusers model itself gives (frame by frame for the image VAE)."""
    with torch.no_grad():
        if kind != "kl":
            return ref.encode(video).latent_dist.mode()
        b, c, t, h, w = video.shape
        z = ref.encode(video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)).latent_dist.mode()
        return z.reshape(b, t, *z.shape[1:]).permute(0, 2, 1, 3, 4)


def _raw_decode(ref: torch.nn.Module, kind: str, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if kind != "kl":
            return ref.decode(z).sample.clamp(-1, 1)
        b, c, t, h, w = z.shape
        x = ref.decode(z.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)).sample.clamp(-1, 1)
        return x.reshape(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)


def _one_line_error(exc_info: pytest.ExceptionInfo) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="module", params=KINDS)
def saved(request, tmp_path_factory):
    kind = request.param
    return kind, save_tiny(kind, tmp_path_factory.mktemp(kind))


@pytest.fixture(scope="module")
def loaded(saved):
    kind, folder = saved
    return kind, folder, load_autoencoder(str(folder))


# -- diffusers VAEs ------------------------------------------------------------------------------


@needs_diffusers
def test_ratios_channels_and_describe(loaded):
    kind, folder, ae = loaded
    channels, temporal, spatial, step = TINY[kind][2]
    assert isinstance(ae, DiffusersAutoencoder) and isinstance(ae, Autoencoder)
    assert (ae.channels, ae.temporal_ratio, ae.spatial_ratio, ae.frame_step) == (
        channels,
        temporal,
        spatial,
        step,
    )
    assert ae.spec == str(folder)
    info = json.loads(json.dumps(ae.describe()))
    assert info["class"] == TINY[kind][0] and info["spec"] == str(folder)
    assert (info["channels"], info["temporal_ratio"], info["spatial_ratio"]) == (
        channels,
        temporal,
        spatial,
    )
    assert info["normalisation"]["scaling_factor"] == pytest.approx(EXPECTED_NORM[kind][2])
    assert not any(p.requires_grad for p in ae.model.parameters()) and not ae.model.training


@needs_diffusers
def test_encode_decode_match_the_raw_vae(loaded):
    kind, _, ae = loaded
    video = _video(FRAMES[kind])
    latents = ae.encode(video)
    assert latents.dtype == torch.float32
    assert latents.shape == (2, ae.channels, *ae.latent_shape(FRAMES[kind], SIZE, SIZE))
    decoded = ae.decode(latents)
    assert decoded.shape == video.shape and decoded.dtype == torch.float32
    assert decoded.abs().max() <= 1.0

    ref = build_tiny(kind)  # the very weights that were saved, never through our loader
    raw = _raw_encode(ref, kind, video)
    assert raw.shape == latents.shape
    mean_l, std_l, scale = EXPECTED_NORM[kind]
    mean = torch.tensor(mean_l).view(1, -1, 1, 1, 1)
    std = torch.tensor(std_l).view(1, -1, 1, 1, 1)
    # The normalisation is inverted exactly (float32 rounding of the normalised values only) ...
    torch.testing.assert_close(latents * std / scale + mean, raw, rtol=1e-6, atol=1e-6)
    # ... so decode(encode(x)) is the raw VAE's encode -> decode; random tiny decoders amplify
    # that last-bit rounding a little, hence rtol 1e-4 on top of atol 1e-5.
    torch.testing.assert_close(decoded, _raw_decode(ref, kind, raw), rtol=1e-4, atol=1e-5)


@needs_diffusers
def test_normalisation_uses_the_config_values(loaded):
    kind, _, ae = loaded
    video = _video(FRAMES[kind], batch=1, seed=1)
    raw = _raw_encode(build_tiny(kind), kind, video)
    mean_l, std_l, scale = EXPECTED_NORM[kind]
    mean = torch.tensor(mean_l).view(1, -1, 1, 1, 1)
    std = torch.tensor(std_l).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(ae.encode(video), (raw - mean) * scale / std, rtol=1e-5, atol=1e-6)
    norm = ae.describe()["normalisation"]
    if "latents_mean" in norm:
        assert norm["latents_mean"] == pytest.approx(mean_l)
        assert norm["latents_std"] == pytest.approx(std_l)
    else:
        assert norm["shift_factor"] == pytest.approx(mean_l[0])


@needs_diffusers
def test_check_shape_refuses_with_a_valid_suggestion(loaded):
    kind, _, ae = loaded
    frames = FRAMES[kind]
    ae.check_shape(frames, SIZE, SIZE)
    if ae.frame_step > 1:
        step = ae.frame_step
        with pytest.raises(InputError) as err:
            ae.check_shape(frames + 1, SIZE, SIZE)
        message = _one_line_error(err)
        assert f"1 + k*{step}" in message and f"{frames} or {frames + step}" in message
        with pytest.raises(InputError):  # encode refuses too, rather than drop frames
            ae.encode(_video(frames + 1, batch=1))
    with pytest.raises(InputError) as err:
        ae.check_shape(0, SIZE, SIZE)
    assert "frames must be" in _one_line_error(err)
    spatial = ae.spatial_ratio
    with pytest.raises(InputError) as err:
        ae.check_shape(frames, SIZE + 2, SIZE)
    message = _one_line_error(err)
    assert f"height must be a multiple of {spatial}" in message
    assert f"{SIZE} or {SIZE + spatial}" in message and "width must" not in message
    with pytest.raises(InputError) as err:
        ae.decode(torch.zeros(1, ae.channels + 1, 1, 2, 2))
    _one_line_error(err)


@needs_diffusers
def test_tiling(saved):
    kind, folder = saved
    ae = load_autoencoder(str(folder), tiling=True)
    assert ae.tiling and ae.model.use_tiling
    ae.set_tiling(False)
    assert not ae.tiling and not ae.model.use_tiling
    gen = torch.Generator().manual_seed(1)
    frames = FRAMES[kind]
    low = torch.rand(1, 3, frames, 4, 4, generator=gen) * 2 - 1
    video = F.interpolate(low, size=(frames, 64, 64), mode="trilinear")  # smooth content
    z_plain = ae.encode(video)
    y_plain = ae.decode(z_plain)

    calls = []
    tiled_names = ("_tiled_encode" if kind == "kl" else "tiled_encode", "tiled_decode")
    for name in tiled_names:
        original = getattr(ae.model, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        setattr(ae.model, name, spy)
    ae.set_tiling(True, **TILES[kind])
    z_tiled = ae.encode(video)
    y_tiled = ae.decode(z_tiled)
    assert set(tiled_names) <= set(calls)
    assert z_tiled.shape == z_plain.shape and y_tiled.shape == video.shape
    assert torch.isfinite(y_tiled).all()

    # Random weights see each tile's own statistics (GroupNorm, attention), so tiles blend to
    # something close to, not equal to, the untiled result.
    def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
        return F.cosine_similarity((a - a.mean()).flatten(), (b - b.mean()).flatten(), dim=0)

    assert cosine(z_tiled, z_plain) > 0.7
    assert cosine(y_tiled, y_plain) > 0.3
    ae.set_tiling(False)
    assert torch.equal(ae.encode(video), z_plain)


@needs_diffusers
def test_weights_dtype_and_float32_outputs(tmp_path):
    ae = load_autoencoder(str(save_tiny_wan(tmp_path / "wan")), dtype=torch.bfloat16)
    assert next(ae.model.parameters()).dtype == torch.bfloat16
    latents = ae.encode(_video(5, batch=1))
    assert latents.dtype == torch.float32 and latents.shape == (1, 4, 2, 4, 4)
    assert ae.decode(latents).dtype == torch.float32
    assert ae.describe()["dtype"] == "bfloat16"


@needs_diffusers
def test_ltx_timestep_conditioning_decodes_deterministically(tmp_path):
    ae = load_autoencoder(str(save_tiny("ltx", tmp_path / "ltx", timestep_conditioning=True)))
    assert ae.timestep_conditioning and ae.describe()["decode_timestep"] == 0.0
    latents = ae.encode(_video(5, batch=1))
    first = ae.decode(latents)
    assert first.shape == (1, 3, 5, SIZE, SIZE)
    assert torch.equal(first, ae.decode(latents))


@needs_diffusers
def test_image_vae_with_latents_mean_and_std(tmp_path):
    mean, std = [0.3, -0.1, 0.0, 0.2], [2.0, 0.5, 1.0, 4.0]
    folder = save_tiny("kl", tmp_path / "kl", latents_mean=mean, latents_std=std)
    ae = load_autoencoder(str(folder))
    video = _video(2, batch=1)
    raw = _raw_encode(build_tiny("kl", latents_mean=mean, latents_std=std), "kl", video)
    m, s = torch.tensor(mean).view(1, -1, 1, 1, 1), torch.tensor(std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(ae.encode(video), (raw - m) * 0.3611 / s, rtol=1e-5, atol=1e-6)
    assert ae.describe()["normalisation"]["formula"].startswith("(z - latents_mean)")


@needs_diffusers
def test_a_wrong_ratio_prediction_is_a_clear_error(tmp_path):
    ae = load_autoencoder(str(save_tiny_wan(tmp_path / "wan")))
    ae.spatial_ratio = 4  # as if its config had described another model
    with pytest.raises(InputError) as err:
        ae.encode(_video(5, batch=1))
    assert "expected (1, 4, 2, 8, 8)" in _one_line_error(err)


# -- errors --------------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(InputError) as err:
        load_autoencoder(str(tmp_path / "nope"))
    message = _one_line_error(err)
    assert "'pixel'" in message and "nope" in message and "AutoencoderKLWan" in message


def test_folder_without_config_or_with_a_broken_one(tmp_path):
    with pytest.raises(InputError) as err:
        load_autoencoder(str(tmp_path))
    assert "no config.json" in _one_line_error(err)
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_autoencoder(str(tmp_path))
    assert "config.json" in _one_line_error(err)
    (tmp_path / "config.json").write_text('{"latent_channels": 4}', encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_autoencoder(str(tmp_path))
    assert "no _class_name" in _one_line_error(err)


def test_unknown_class(tmp_path):
    (tmp_path / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}', "utf-8")
    with pytest.raises(InputError) as err:
        load_autoencoder(str(tmp_path))
    message = _one_line_error(err)
    assert "UNet2DConditionModel" in message and str(tmp_path) in message
    assert all(name in message for name in SUPPORTED)


@needs_diffusers
def test_pickled_weights_are_refused_without_unpickling(tmp_path, monkeypatch):
    build_tiny("kl").save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "diffusion_pytorch_model.bin").is_file()

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(InputError) as err:
        load_autoencoder(str(tmp_path))
    assert "pickled" in _one_line_error(err)


@needs_diffusers
def test_damaged_or_mismatched_weights(tmp_path):
    folder = save_tiny("kl", tmp_path / "cut")
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CorruptFileError) as err:
        load_autoencoder(str(folder))
    _one_line_error(err)
    folder = save_tiny("kl", tmp_path / "other")
    config = json.loads((folder / "config.json").read_text("utf-8"))
    config["latent_channels"] = 8
    (folder / "config.json").write_text(json.dumps(config), "utf-8")
    with pytest.raises(InputError) as err:
        load_autoencoder(str(folder))
    # diffusers words it by whether accelerate (a dependency of peft) is installed.
    message = _one_line_error(err)
    assert "size mismatch" in message or "expected shape" in message, message


# -- pixels --------------------------------------------------------------------------------------


def test_pixel_is_an_exact_identity():
    ae = load_autoencoder("pixel")
    assert isinstance(ae, PixelAutoencoder) and ae.spec == "pixel" and ae.scale == 1.0
    assert (ae.channels, ae.temporal_ratio, ae.spatial_ratio) == (3, 1, 1)
    video = _video(7, size=17)
    latents = ae.encode(video)
    assert torch.equal(latents, video) and torch.equal(ae.decode(latents), video)
    assert ae.latent_shape(7, 33, 17) == (7, 33, 17)
    ae.check_shape(7, 33, 17)
    ae.set_tiling(True)  # nothing to tile; accepted
    info = json.loads(json.dumps(ae.describe()))
    assert info["class"] == "PixelAutoencoder" and info["normalisation"]["scale"] == 1.0


def test_pixel_scale():
    ae = PixelAutoencoder(scale=2.0)
    video = _video(3, size=8)
    assert torch.equal(ae.encode(video), video * 2.0)
    assert torch.equal(ae.decode(ae.encode(video)), video)
    with pytest.raises(InputError):
        PixelAutoencoder(scale=0.0)
    with pytest.raises(InputError) as err:
        ae.encode(torch.zeros(1, 4, 1, 8, 8))
    _one_line_error(err)
