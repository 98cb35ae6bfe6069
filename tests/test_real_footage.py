"""The real-footage recipe (examples/real_footage): its captions, and a caption-matching judge that
can fail."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from media import ffmpeg

from univid.cli import main
from univid.pipeline import Pipeline
from univid.text.clean import clean_text

ROOT = Path(__file__).parents[1]
RECIPE = ROOT / "examples" / "real_footage" / "recipe.py"
BBB = Path(__file__).parent / "data" / "bigbuckbunny-excerpt.mp4"


def load_recipe():
    spec = importlib.util.spec_from_file_location("recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hand_captions_are_distinct_clean_and_stay_inside_their_videos():
    rows = list(csv.DictReader((RECIPE.parent / "captions.csv").open(encoding="utf-8")))
    captions = [row["caption"] for row in rows]
    assert len(set(captions)) == len(captions) >= 12
    assert all(clean_text(c, "caption") == c for c in captions)
    frames = {"bikes.mp4": 250, "carphone_pristine.mp4": 120, "bigbuckbunny.mp4": 132}
    cuts = {"bikes.mp4": [30, 76, 137, 187, 242]}  # the cuts the real-data README gives
    for row in rows:
        first, last = int(row["first"]), int(row["last"])
        assert 0 <= first < last < frames[row["video"]]
        assert not any(first < c <= last for c in cuts.get(row["video"], [])), row


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A taef2 cache of two captioned parts of the Big Buck Bunny excerpt, and a 2-step run."""
    root = tmp_path_factory.mktemp("real")
    src = root / "src"
    src.mkdir()
    for name, start, text in [("out", 0, "a rabbit crawling out"), ("up", 3, "a rabbit standing")]:
        out = src / f"{name}.mp4"
        ffmpeg(
            "-ss", str(start), "-i", str(BBB), "-t", "1.2", "-an",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast", str(out),
        )  # fmt: skip
        (src / f"{name}.txt").write_text(text, encoding="utf-8")
    cache, run = root / "cache", root / "run"
    args = ["prepare", str(src), "--out", str(cache), "--autoencoder", "taef2", "--frames", "4"]
    assert main([*args, "--height", "64", "--width", "64", "--window-stride", "2"]) == 0
    overrides = [f"data.cache={cache}", "model.patch=1,2,2", "train.steps=2", "train.batch_size=2"]
    assert main(["train", "tiny", "--out", str(run), *overrides, "train.sample_every=0"]) == 0
    return run, cache


def test_match_runs_end_to_end_and_writes_its_grid(tiny_run, tmp_path):
    run, cache = tiny_run
    summary = load_recipe().match(run, cache, tmp_path, seeds=[1_000_000, 1_000_001], steps=2)
    assert summary["captions"] == 2 and summary["samples"] == 4
    assert summary["matched"] == sum(r["matched"] for r in summary["results"])
    assert all(r["matched"] == (r["own_mse"] < r["other_mse"]) for r in summary["results"])
    low, high = summary["wilson95"]
    assert low <= summary["rate"] <= high
    assert (tmp_path / "real-vs-generated.gif").is_file()
    assert json.loads((tmp_path / "caption-matching.json").read_text())["samples"] == 4


@pytest.mark.parametrize("right", [True, False])
def test_the_caption_judge_can_fail(tiny_run, tmp_path, monkeypatch, right):
    """'Generated' videos that are real windows of their own caption all match; the same windows
    under the other caption all fail."""
    from univid.data.cache import CacheDataset
    from univid.video import to_uint8

    run, cache = tiny_run
    ds = CacheDataset(cache)
    captions = sorted({c["caption"] for c in ds.clips})
    first = {}
    for i, clip in enumerate(ds.clips):
        first.setdefault(clip["caption"], i)
    pipe = Pipeline.from_pretrained(run, device="cpu")

    def windows(self, prompts, seeds, num_steps=None):
        order = prompts if right else prompts[::-1]
        return np.concatenate(
            [to_uint8(pipe.autoencoder.decode(ds[first[p]].latents[None])) for p in order]
        )

    monkeypatch.setattr(Pipeline, "generate", windows)
    summary = load_recipe().match(run, cache, tmp_path, seeds=[1_000_000], steps=2)
    assert len(captions) == 2
    assert summary["matched"] == (2 if right else 0)


def test_training_samples_show_distinct_captions_of_a_windowed_cache(tiny_run):
    from univid.config import resolve_config
    from univid.data.cache import CacheDataset
    from univid.parallel import Dist
    from univid.train.previews import Previews

    _, cache = tiny_run
    ds = CacheDataset(cache)
    assert len(ds) > 2  # several windows per caption
    previews = Previews(resolve_config("tiny"), Dist(), ds, text=lambda: None)
    assert sorted(previews.prompts) == ["a rabbit crawling out", "a rabbit standing"]
    assert [ds.clips[i]["caption"] for i in previews.clips] == previews.prompts
