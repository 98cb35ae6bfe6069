"""The analytic judge and the evaluation report on ground-truth shapes-world videos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from univid.cli import build_parser, main
from univid.data.shapes import ShapesWorld, render, sample_clip
from univid.eval.groundtruth import judge_accuracy
from univid.eval.judge import FAILURES, judge
from univid.eval.report import EVAL_SEED_OFFSET, run_eval, save_report, wilson_interval, write_grid


@pytest.mark.parametrize("sigma", [0.0, 15.0])
@pytest.mark.parametrize(("frames", "size", "clips"), [(8, 32, 80), (4, 16, 150)])
@pytest.mark.parametrize("radius", [None, 4.0, 7.0])
def test_judge_passes_ground_truth(
    frames: int, size: int, clips: int, sigma: float, radius: float | None
) -> None:
    # Every size the world draws (drawn, and both ends of RADIUS_RANGE), with and without
    # Gaussian noise of sigma 15. Measured with `python -m univid.eval.groundtruth`: see
    # docs/eval/judge-ground-truth.jsonl (2,000 clips a setting).
    result = judge_accuracy(
        frames, size, clips if radius is None else clips // 3, sigma, 123, radius
    )
    assert result["rate"] >= 0.995, result


def test_judge_reads_the_attributes_of_ground_truth() -> None:
    for index in range(40):
        video, _, clip = ShapesWorld(seed=77)[index]
        verdict = judge(video)
        assert (verdict.colour, verdict.shape, verdict.direction) == (
            clip.colour,
            clip.shape,
            clip.direction,
        )
        assert verdict.failure is None and verdict.objects == 1
        assert verdict.valid_frames == 8
        assert abs(verdict.radius - clip.radius) < 0.3


def test_wilson_interval_exact_values() -> None:
    # Reference values: R's binom::binom.confint(x, n, methods = "wilson").
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2365931, abs=1e-7) and high == pytest.approx(0.7634069, abs=1e-7)
    # At p = 0 and 1 the interval is z^2 / (n + z^2) wide, not empty.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775328), abs=1e-7)
    assert wilson_interval(10, 10) == pytest.approx((0.7224672, 1.0), abs=1e-7)
    low, high = wilson_interval(328, 336)
    assert low < 328 / 336 < high
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@pytest.mark.parametrize("shape", [(8, 32, 32), (4, 16, 16), (2, 8, 8), (1, 4, 4), (1, 1, 1)])
def test_black_video_is_undecided(shape: tuple[int, int, int]) -> None:
    verdict = judge(np.zeros((*shape, 3), dtype=np.uint8))
    assert (verdict.colour, verdict.shape, verdict.direction) == (None, None, None)
    assert verdict.valid_frames == 0
    assert verdict.failure == "empty"


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
    report, videos = run_eval(
        generate, num_seeds=num_seeds, batch_size=50, progress=False, seed_offset=7
    )
    assert report["num_videos"] == len(report["items"]) == len(videos) == 84 * num_seeds
    assert videos.shape == (84 * num_seeds, frames, size, size, 3)
    assert report["accuracy"]["all_correct"] >= 0.99
    assert report["seeds"] == {"offset": 7, "per_prompt": num_seeds}
    assert set(report["failures"]) == set(FAILURES)
    assert report["all_correct"] == 84 * num_seeds - sum(report["failures"].values())
    low, high = report["all_correct_wilson95"]
    assert low <= report["accuracy"]["all_correct"] <= high
    assert min(report["per_colour"].values()) >= 0.9
    assert set(report["per_shape"]) == {"circle", "square", "triangle"}
    assert len(report["per_direction"]) == 4
    first = report["items"][0]
    assert first["prompt"] == "a red circle moving left" and first["seed"] == 7
    assert report["items"][1]["seed"] == (8 if num_seeds > 1 else 7)
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
    assert report["seeds"]["offset"] == EVAL_SEED_OFFSET
    assert report["items"][0]["seed"] == EVAL_SEED_OFFSET
    assert report["accuracy"]["all_correct"] == report["accuracy"]["all_three"] == 0.0
    assert report["failures"]["empty"] == 84
    assert all(item["judged"]["shape"] is None for item in report["items"])
    json.dumps(report, allow_nan=False)
    failures = save_report(report, videos, tmp_path / "r.json", tmp_path / "r.png")
    assert failures == tmp_path / "r-failures.png"
    assert (tmp_path / "r.png").stat().st_size > 0 and failures.stat().st_size > 0
    assert json.loads((tmp_path / "r.json").read_text())["failures"]["empty"] == 84


def test_failures_grid_shows_only_failures(tmp_path) -> None:
    truth = _ground_truth(4, 16)

    def half_black(prompts: list[str], seeds: list[int]) -> np.ndarray:
        videos = truth(prompts, seeds)
        videos[::2] = 0  # every other video fails
        return videos

    report, videos = run_eval(half_black, num_seeds=1, progress=False, seed_offset=0)
    assert report["failures"]["empty"] == 42 and report["all_correct"] == 42
    failures = save_report(report, videos, tmp_path / "r.json", tmp_path / "r.png")
    with Image.open(tmp_path / "r.png") as every, Image.open(failures) as failed:
        assert failed.height < every.height  # 42 cells against 84
    # Nothing failed: no failures grid, and a stale one is removed.
    report, videos = run_eval(truth, num_seeds=1, progress=False, seed_offset=0)
    assert save_report(report, videos, tmp_path / "r.json", tmp_path / "r.png") is None
    assert not failures.exists()


def test_eval_seeds_default_to_the_unseen_range() -> None:
    assert build_parser().parse_args(["eval"]).seed_offset == EVAL_SEED_OFFSET == 1_000_000


def test_run_eval_rejects_float_videos() -> None:
    def floats(prompts: list[str], seeds: list[int]) -> np.ndarray:
        return np.zeros((len(prompts), 4, 16, 16, 3), dtype=np.float32)

    with pytest.raises(ValueError, match="uint8"):
        run_eval(floats, num_seeds=1, progress=False)


def test_negative_seed_offset_is_refused(tmp_path, capsys) -> None:
    assert main(["eval", "--seed-offset", "-1", "--out", str(tmp_path / "r.json")]) == 2
    assert "--seed-offset" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seed_offset"):
        run_eval(_ground_truth(), num_seeds=1, progress=False, seed_offset=-1)
