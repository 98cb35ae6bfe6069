"""How often the judge is right on the world's own clips: the judge's accuracy on ground truth.

``python -m univid.eval.groundtruth`` prints one JSON line per (frames x size, noise) setting;
the figures in docs/eval/judge-ground-truth.jsonl come from it. A judge is trusted only if it
passes (nearly) every true clip here and fails the synthetic wrong answers of the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter

import numpy as np

from univid.data.shapes import RADIUS_RANGE, REFERENCE_SIZE, ShapeClip, ShapesWorld, render
from univid.eval.judge import failure_against, judge
from univid.eval.report import wilson_interval

SETTINGS = ((8, 32), (4, 16))  # (frames, size): the bundled model's shape and a smaller one
NOISE_SIGMAS = (0.0, 15.0)  # none, and Gaussian noise about as strong as a generated background


def add_noise(video: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``video`` (uint8) plus Gaussian noise of ``sigma`` levels, clipped back to uint8."""
    if not sigma:
        return video
    return np.clip(video + rng.normal(0.0, sigma, video.shape), 0, 255).astype(np.uint8)


def with_radius(clip: ShapeClip, radius: float, frames: int, size: int) -> ShapeClip:
    """``clip`` with another radius, its start moved (if needed) so the whole path stays inside."""
    clip = dataclasses.replace(clip, radius=radius)
    end = clip.centre(frames - 1, frames)
    start = []
    for first, last in zip(clip.start, end, strict=True):
        low, high = radius - min(first, last), size - radius - max(first, last)
        start.append(first + max(low, 0.0) + min(high, 0.0))
    return dataclasses.replace(clip, start=(start[0], start[1]))


def judge_accuracy(
    frames: int,
    size: int,
    clips: int,
    sigma: float = 0.0,
    seed: int = 123,
    radius: float | None = None,
) -> dict[str, object]:
    """Judge ``clips`` ground-truth clips of ``ShapesWorld(seed)``; rate, interval, failures.

    ``radius`` (pixels at the 32-px reference, scaled like the world) renders every clip at that
    size instead of the drawn one, e.g. at the ends of RADIUS_RANGE.
    """
    world, rng = ShapesWorld(frames, size, size, seed=seed), np.random.default_rng(seed)
    failures: Counter[str] = Counter()
    for index in range(clips):
        video, _, clip = world[index]
        if radius is not None:
            video = render_at(clip, radius * size / REFERENCE_SIZE, frames, size)
        verdict = judge(add_noise(video, sigma, rng))
        kind = failure_against(verdict, clip.colour, clip.shape, clip.direction)
        if kind:
            failures[kind] += 1
    right = clips - sum(failures.values())
    return {
        "frames": frames,
        "size": size,
        "sigma": sigma,
        "radius": radius or "drawn",
        "seed": seed,
        "clips": clips,
        "right": right,
        "rate": right / clips,
        "wilson95": list(wilson_interval(right, clips)),
        "failures": dict(failures),
    }


def render_at(clip: ShapeClip, radius: float, frames: int, size: int) -> np.ndarray:
    """The world's rendering of ``clip`` at ``radius`` (kept inside the frame)."""
    return render(with_radius(clip, radius, frames, size), frames, size, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000, help="clips per drawn-size setting")
    parser.add_argument("--extreme-clips", type=int, default=500, help="clips per extreme size")
    parser.add_argument("--seed", type=int, default=123, help="ShapesWorld seed")
    args = parser.parse_args()
    for frames, size in SETTINGS:
        for sigma in NOISE_SIGMAS:
            for radius in (None, *RADIUS_RANGE):
                clips = args.clips if radius is None else args.extreme_clips
                row = judge_accuracy(frames, size, clips, sigma, args.seed, radius)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
