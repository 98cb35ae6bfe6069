"""The analytic judge and the evaluation report on ground-truth shapes-world videos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from univid.data.shapes import ShapesWorld, render, sample_clip
from univid.eval.judge import judge
from univid.eval.report import run_eval, write_grid

ATTRIBUTES = ("colour", "shape", "direction")


def _accuracies(world: ShapesWorld, count: int) -> dict[str, float]:
    hits = {a: 0 for a in (*ATTRIBUTES, "all_three")}
    for index in range(count):
        video, _, clip = world[index]
        verdict = judge(video)
        right = {a: getattr(verdict, a) == getattr(clip, a) for a in ATTRIBUTES}
        right["all_three"] = all(right.values())
        for key, ok in right.items():
            hits[key] += ok
    return {key: n / count for key, n in hits.items()}


def test_judge_is_right_on_ground_truth_at_default_size() -> None:
    # Measured: 1.0 for every attribute on these 500 clips.
    accuracy = _accuracies(ShapesWorld(seed=123), 500)
    for key, value in accuracy.items():
        assert value >= 0.99, (key, accuracy)


def test_judge_handles_small_videos() -> None:
    # Measured: 1.0 for every attribute on 500 clips at 16x16x4 (0.76 all-three at 8x8x2).
    accuracy = _accuracies(ShapesWorld(frames=4, height=16, width=16, seed=123), 300)
    for key, value in accuracy.items():
        assert value >= 0.95, (key, accuracy)


def test_judge_tolerates_noise() -> None:
    # Measured: 1.0 all-three with Gaussian noise of sigma 15 at 16x16x4 and 32x32x8.
    world, rng = ShapesWorld(frames=4, height=16, width=16, seed=7), np.random.default_rng(0)
    hits = 0
    for index in range(100):
        video, _, clip = world[index]
        noisy = np.clip(video + rng.normal(0.0, 15.0, video.shape), 0, 255).astype(np.uint8)
        verdict = judge(noisy)
        hits += (verdict.colour, verdict.shape, verdict.direction) == (
            clip.colour,
            clip.shape,
            clip.direction,
        )
    assert hits >= 95


@pytest.mark.parametrize("shape", [(8, 32, 32), (4, 16, 16), (2, 8, 8), (1, 4, 4), (1, 1, 1)])
def test_black_video_is_undecided(shape: tuple[int, int, int]) -> None:
    verdict = judge(np.zeros((*shape, 3), dtype=np.uint8))
    assert (verdict.colour, verdict.shape, verdict.direction) == (None, None, None)
    assert verdict.valid_frames == 0


def test_static_object_has_no_direction() -> None:
    video, _, clip = ShapesWorld(seed=5)[0]
    verdict = judge(np.repeat(video[:1], 8, axis=0))
    assert verdict.direction is None
    assert (verdict.colour, verdict.shape) == (clip.colour, clip.shape)


def test_largest_blob_wins_over_a_speck() -> None:
    video, _, clip = ShapesWorld(seed=9)[3]
    video = video.copy()
    video[:, 0, 0] = (255, 255, 255)  # a one-pixel speck in a corner of every frame
    verdict = judge(video)
    assert (verdict.colour, verdict.shape, verdict.direction) == (
        clip.colour,
        clip.shape,
        clip.direction,
    )


def test_judge_rejects_wrong_layout() -> None:
    with pytest.raises(ValueError):
        judge(np.zeros((8, 32, 32), dtype=np.uint8))


def _ground_truth(frames: int = 4, size: int = 16):
    """A generator that renders the true clip of each prompt (prompts are canonical)."""

    def generate(prompts: list[str], seeds: list[int]) -> np.ndarray:
        videos = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            _, colour, shape, _, direction = prompt.split()
            clip = sample_clip(
                np.random.default_rng(seed),
                size,
                size,
                shape=shape,
                colour=colour,
                direction=direction,
            )
            videos.append(render(clip, frames, size, size))
        return np.stack(videos)

    return generate


@pytest.mark.parametrize(("frames", "size", "num_seeds"), [(4, 16, 2), (8, 32, 1)])
def test_run_eval_on_ground_truth(tmp_path, frames: int, size: int, num_seeds: int) -> None:
    generate = _ground_truth(frames, size)
    report, videos = run_eval(generate, num_seeds=num_seeds, batch_size=50, progress=False)
    assert report["num_videos"] == len(report["items"]) == len(videos) == 84 * num_seeds
    assert videos.shape == (84 * num_seeds, frames, size, size, 3)
    assert report["accuracy"]["all_three"] >= 0.99
    assert min(report["per_colour"].values()) >= 0.9
    assert set(report["per_shape"]) == {"circle", "square", "triangle"}
    assert len(report["per_direction"]) == 4
    first = report["items"][0]
    assert first["prompt"] == "a red circle moving left" and first["seed"] == 0
    assert report["items"][1]["seed"] == (1 if num_seeds > 1 else 0)
    json.dumps(report, allow_nan=False)  # strictly JSON-serialisable

    path = tmp_path / "grid" / "eval.png"
    write_grid(report, videos, path)
    with Image.open(path) as image:
        image.load()
        # 4 cells a row, each a strip of 4 frames upscaled to 64 px, plus labels and gaps.
        assert image.width >= 4 * (4 * 64) and image.height >= 84 * num_seeds // 4 * 64


def test_run_eval_on_black_videos(tmp_path) -> None:
    def black(prompts: list[str], seeds: list[int]) -> np.ndarray:
        return np.zeros((len(prompts), 4, 16, 16, 3), dtype=np.uint8)

    report, videos = run_eval(black, num_seeds=1, batch_size=32, progress=False)
    assert report["num_videos"] == 84
    assert report["accuracy"]["all_three"] == 0.0
    assert all(item["judged"]["shape"] is None for item in report["items"])
    json.dumps(report, allow_nan=False)
    write_grid(report, videos, tmp_path / "black.png")
    assert (tmp_path / "black.png").stat().st_size > 0


def test_run_eval_rejects_float_videos() -> None:
    def floats(prompts: list[str], seeds: list[int]) -> np.ndarray:
        return np.zeros((len(prompts), 4, 16, 16, 3), dtype=np.float32)

    with pytest.raises(ValueError, match="uint8"):
        run_eval(floats, num_seeds=1, progress=False)
