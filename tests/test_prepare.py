"""`univid prepare` and training from its cache: real ffmpeg clips, corrupted copies of each kind,
buckets, resume, the skip report, and prepare -> train -> generate with a diffusers autoencoder
and a T5 text encoder (tiny random ones, loaded from folders like real ones)."""

from __future__ import annotations

import csv
import json
import os
import shutil

import av
import numpy as np
import pytest
import torch
from media import DATASET, make_bad_media, make_dataset, make_video

from univid.cli import main
from univid.config import resolve_config
from univid.data import BadSample
from univid.data.cache import CacheDataset
from univid.data.decode import ClipSpec, read_clip
from univid.text import TextEncoder
from univid.train import train

BUCKETS = "16x24x32,8x32x32,1x24x32"
HUGE = str(320 * 320)  # the bad set's huge.mp4 is 640x640


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Good clips (6 videos of 2 s at 8 fps in 5 containers, a square 1.2 s clip, an image) and
    a corrupted copy of each kind, in one folder."""
    root = make_dataset(tmp_path_factory.mktemp("media") / "src")
    make_video(root / "square.mp4", seconds=1.2, fps=10, width=48, height=48)
    (root / "square.txt").write_text("a square test pattern", encoding="utf-8")
    bad = make_bad_media(root)
    return root, bad


def prepare_args(src, out):
    return ["prepare", str(src), "--out", str(out), "--buckets", BUCKETS, "--shard-size", "4"]


def test_check_lists_every_bad_item_with_its_reason(source, capsys):
    root, bad = source
    code = main(
        ["prepare", str(root), "--check", "--buckets", BUCKETS, "--max-source-pixels", HUGE]
    )
    assert code == 1
    out = capsys.readouterr().out.splitlines()
    listed = dict(line.split(": ", 1) for line in out[:-1])
    assert set(listed) == set(bad)
    for key, reason in bad.items():
        assert reason in listed[key], (key, listed[key])
    assert out[-1] == (
        f"{len(bad) + 8} items: 8 usable (1x24x32: 1, 8x32x32: 1, 16x24x32: 6), {len(bad)} bad"
    )


def test_prepare_buckets_exact_content_abort_and_resume(source, tmp_path, capsys, text_encoder):
    root, bad = source
    cache = tmp_path / "cache"
    args = [*prepare_args(root, cache), "--max-source-pixels", HUGE]
    # 14 of 22 items are bad: above the default 10 %, prepare stops with one line and a log
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "max_bad_fraction=0.1" in err and "bad.log" in err
    logged = (cache / "bad.log").read_text(encoding="utf-8")
    assert logged and not (cache / "index.json").exists()
    done_before = sorted(p.name for p in cache.glob("shard_*.json"))
    assert done_before  # the shards finished before the stop are kept ...

    assert main([*args, "--max-bad-fraction", "0.9"]) == 0
    err = capsys.readouterr().err
    assert f"{len(done_before)} reused" in err  # ... and reused by the rerun
    assert f"skipped {len(bad)} bad clip(s)" in err
    index = json.loads((cache / "index.json").read_text())
    assert {b["key"] for b in index["bad"]} == set(bad)
    for entry in index["bad"]:
        assert bad[entry["key"]] in entry["reason"]
    assert len((cache / "bad.log").read_text().splitlines()) == len(bad)
    assert {k: v["clips"] for k, v in index["buckets"].items()} == {
        "16x24x32": 6,
        "8x32x32": 1,
        "1x24x32": 1,
    }
    assert index["buckets"]["16x24x32"]["latent"] == [3, 16, 24, 32]

    # the cache holds exactly the decoded clip (pixel autoencoder) and the caption's states
    ds = CacheDataset(cache)
    assert len(ds) == 8 and ds.channels == 3 and ds.text_dim == 384
    i = next(k for k, c in enumerate(ds.clips) if c["key"] == "a.mp4")
    clip = read_clip(root / "a.mp4", ClipSpec(frames=16, height=24, width=32, fps=8.0))
    expected = torch.from_numpy(clip).permute(3, 0, 1, 2).float() / 127.5 - 1.0
    assert torch.equal(ds[i].latents, expected)
    states, mask = text_encoder.encode([DATASET["a.mp4"]])
    assert ds[i].caption == DATASET["a.mp4"]
    # encoded in a batch of 4 there, alone here: equal up to the CPU kernels' rounding
    torch.testing.assert_close(ds[i].text, states[0, : int(mask[0].sum())], rtol=0, atol=1e-5)
    null, null_mask = text_encoder.encode([""])
    assert torch.equal(ds.null_text, null[0, : int(null_mask[0].sum())])

    # resume: a lost shard is redone, the others are not touched, the index is the same
    first = cache / "shard_00000.safetensors"
    stamp = first.stat().st_mtime_ns
    (cache / "shard_00001.json").unlink()
    (cache / "shard_00001.safetensors").unlink(missing_ok=True)
    assert main([*args, "--max-bad-fraction", "0.9"]) == 0
    assert "1 shard(s) written" in capsys.readouterr().err
    assert first.stat().st_mtime_ns == stamp
    assert json.loads((cache / "index.json").read_text()) == index

    # other settings into the same folder are refused rather than mixed in
    assert main([*args, "--max-bad-fraction", "0.9", "--fps", "4"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pixel_cache(source, tmp_path_factory):
    root, _ = source
    cache = tmp_path_factory.mktemp("pixel") / "cache"
    args = [*prepare_args(root, cache), "--max-source-pixels", HUGE, "--max-bad-fraction", "1"]
    assert main(args) == 0
    return cache


def tiny_cache_config(cache, *overrides):
    return resolve_config(
        "tiny",
        [
            f"data.cache={cache}",
            "model.patch=1,4,4",
            "train.steps=4",
            "train.ckpt_every=4",
            "train.log_every=1",
            "train.sample_every=2",
            "train.val_every=2",
            "train.val_clips=3",
            "data.tokens_per_batch=1536",
            *overrides,
        ],
    )


def test_train_from_a_bucketed_cache(pixel_cache, tmp_path):
    run = tmp_path / "run"
    row = train(tiny_cache_config(pixel_cache), run, progress=False)
    assert row["step"] == 4 and np.isfinite(row["loss"]) and np.isfinite(row["val_loss_ema"])
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["frames"] == 16 and config["model"]["in_channels"] == 3
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    # per-bucket batch sizes from data.tokens_per_batch: 1536 // (16*6*8) = 2 for 16x24x32,
    # 1536 // (8*8*8) = 3 for 8x32x32, 1536 // (1*6*8) = 32 for the 1-frame bucket
    sizes = np.diff([0] + [int(r["samples"]) for r in rows])
    assert set(sizes) <= {2, 3, 32} and len(sizes) == 4
    assert (run / "samples" / "step_00000002.gif").is_file()
    assert rows[-1]["skipped"] == "0"


def test_a_damaged_shard_is_skipped_and_counted(pixel_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(pixel_cache, cache)
    shard = cache / "shard_00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    run = tmp_path / "run"
    cfg = tiny_cache_config(cache, "train.sample_every=0", "train.val_every=0", "train.steps=6")
    row = train(cfg, run, progress=False)
    assert row["step"] == 6 and row["skipped"] > 0
    log = (run / "skipped.log").read_text()
    assert "cannot read cache shard shard_00000.safetensors" in log


def test_a_shard_that_is_a_fifo_is_a_bad_sample_not_a_hang(pixel_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(pixel_cache, cache)
    shard = cache / "shard_00000.safetensors"
    shard.unlink()
    os.mkfifo(shard)
    with pytest.raises(BadSample, match="FIFO"):
        CacheDataset(cache)[0]


def test_prepare_train_generate_with_wan_and_t5(tmp_path, capsys):
    """End to end on latents: a diffusers AutoencoderKLWan and a T5 encoder, both loaded from
    local folders, as users' pretrained ones are."""
    from tiny_models import save_tiny_wan
    from tiny_text import save_tiny_t5

    vae = save_tiny_wan(tmp_path / "wan")
    t5 = save_tiny_t5(tmp_path / "t5")
    src = make_dataset(tmp_path / "src")
    cache = tmp_path / "cache"
    args = ["prepare", str(src), "--out", str(cache), "--buckets", "5x32x32,1x32x32"]
    assert main([*args, "--autoencoder", str(vae), "--text-encoder", str(t5)]) == 0
    ds = CacheDataset(cache)
    assert ds.channels == 4 and ds.text_dim == 32 and len(ds) == len(DATASET)
    assert ds.latent_shapes == {(5, 32, 32): (4, 2, 4, 4), (1, 32, 32): (4, 1, 4, 4)}
    assert ds.index["text_encoder"]["class"] == "T5EncoderModel"

    run = tmp_path / "run"
    overrides = [f"data.cache={cache}", "model.patch=1,2,2", "train.steps=3", "train.batch_size=2"]
    assert main(["train", "tiny", "--out", str(run), *overrides, "train.sample_every=3"]) == 0
    assert (run / "samples" / "step_00000003.gif").is_file()
    out = tmp_path / "video.mp4"
    prompt = DATASET["a.mp4"]
    assert main(["generate", prompt, "--model", str(run), "--out", str(out), "--steps", "2"]) == 0
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (32, 32, 3)
    capsys.readouterr()

    # the decoded video is the Wan decoder's output of the sampled latents
    from univid.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(str(run))
    assert type(pipe.autoencoder).__name__ == "DiffusersAutoencoder"
    assert isinstance(pipe.text_encoder, TextEncoder)
    video = pipe(prompt, num_steps=2)
    assert video.shape == (5, 32, 32, 3)


def test_train_on_the_fly_from_a_folder_skips_bad_items(source, tmp_path):
    """Pixel-space training straight from the folder (no cache): bad items are skipped and
    counted, every step still trains."""
    from univid.data.videos import VideoDataset

    root, bad = source
    cfg = resolve_config(
        "tiny",
        ["data.frames=8", "data.height=32", "data.width=32", "train.steps=3", "train.log_every=1"],
    )
    spec = ClipSpec(frames=8, height=32, width=32, fps=8.0, max_pixels=320 * 320)
    dataset = VideoDataset(root, spec)
    row = train(cfg, tmp_path / "run", progress=False, dataset=dataset)
    assert row["step"] == 3 and np.isfinite(row["loss"])
    log = (tmp_path / "run" / "skipped.log").read_text()
    assert row["skipped"] == len(log.splitlines()) > 0
    assert all(any(key in line for key in bad) for line in log.splitlines())
