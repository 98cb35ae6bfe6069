"""The judge fails synthetic wrong answers, each for its own reason.

Every wrong video is built with the world's own renderer from a true clip, so the only thing
wrong with it is the one thing the test changes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from univid.data.shapes import ShapeClip, render, sample_clip
from univid.eval.groundtruth import add_noise, render_at
from univid.eval.judge import failure_against, judge

SETTINGS = [(8, 32, 0.0), (8, 32, 15.0), (4, 16, 0.0), (4, 16, 15.0)]


def _kind(video: np.ndarray, clip: ShapeClip) -> str | None:
    return failure_against(judge(video), clip.colour, clip.shape, clip.direction)


def _inside(clip: ShapeClip, frames: int, size: int) -> bool:
    r = clip.radius
    return all(
        r <= x <= size - r and r <= y <= size - r
        for x, y in (clip.centre(k, frames) for k in range(frames))
    )


def _doubled(rng: np.random.Generator, frames: int, size: int, low: float, high: float, gap=False):
    """A true clip plus a copy ``low``-``high`` px away, both wholly in the frame: at any angle,
    or with ``gap`` along an axis and one diameter further (a gap of ``low``-``high`` px)."""
    while True:
        clip = sample_clip(rng, size, size)
        distance, angle = rng.uniform(low, high), rng.uniform(0, 2 * np.pi)
        if gap:
            distance, angle = distance + 2 * clip.radius, rng.integers(4) * np.pi / 2
        x, y = clip.start
        copy = dataclasses.replace(
            clip, start=(x + distance * np.cos(angle), y + distance * np.sin(angle))
        )
        if _inside(copy, frames, size):
            both = np.maximum(render(clip, frames, size, size), render(copy, frames, size, size))
            return both, clip


@pytest.mark.parametrize(("frames", "size", "sigma"), SETTINGS)
def test_doubled_objects_fail_as_extra_object(frames: int, size: int, sigma: float) -> None:
    # Centres 4-8 px apart: with radii of 2-7 px the copies overlap or touch in most cases and
    # threshold into one component, which the template fit must see as two.
    rng = np.random.default_rng(size + int(sigma))
    for _ in range(25):
        video, clip = _doubled(rng, frames, size, 4.0, 8.0)
        assert _kind(add_noise(video, sigma, rng), clip) == "extra_object", clip


@pytest.mark.parametrize(("frames", "size"), [(8, 32), (4, 16)])
def test_most_doubled_objects_3_to_4_px_apart_fail(frames: int, size: int) -> None:
    # The judge's limit: two copies only 3-4 px apart make one blob barely longer than a single
    # object, as round as many single objects the model draws. Measured on 200 such videos
    # (seed 99): 144 of 200 fail at 32x32 (145 without noise), 195 of 200 at 16x16 (196).
    rng = np.random.default_rng(21)
    kinds = []
    for _ in range(40):
        video, clip = _doubled(rng, frames, size, 3.0, 4.0)
        kinds.append(_kind(add_noise(video, 15.0, rng), clip))
    assert set(kinds) <= {"extra_object", None}
    assert kinds.count("extra_object") >= 0.6 * len(kinds)


@pytest.mark.parametrize(("frames", "size"), [(8, 32), (4, 16)])
def test_copies_side_by_side_fail_as_extra_object(frames: int, size: int) -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        # A gap of 3-4 px between the copies: two separate components.
        video, clip = _doubled(rng, frames, size, 3.0, 4.0, gap=True)
        verdict = judge(video)
        assert verdict.objects == 2
        assert failure_against(verdict, clip.colour, clip.shape, clip.direction) == "extra_object"


@pytest.mark.parametrize(
    ("frames", "size", "sigma", "radius"),
    [(f, s, sigma, 11.0) for f, s, sigma in SETTINGS] + [(8, 32, 0.0, 2.25), (8, 32, 15.0, 2.25)],
)
def test_objects_outside_the_world_sizes_fail_as_size(
    frames: int, size: int, sigma: float, radius: float
) -> None:
    # RADIUS_RANGE is 4-7 px at 32 px and the judge allows a factor 1.4 either way (2.9-9.8):
    # 2.25 and 11 are well outside anything the world draws. (At 16x16 a radius of 2.25 is
    # 1.1 px, too few pixels to tell a square from a triangle, so only 32x32 checks it.)
    rng = np.random.default_rng(11)
    for _ in range(6):
        clip = sample_clip(rng, size, size)
        video = add_noise(render_at(clip, radius * size / 32, frames, size), sigma, rng)
        assert _kind(video, clip) == "size", clip


@pytest.mark.parametrize(("frames", "size"), [(8, 32), (4, 16)])
@pytest.mark.parametrize(("first", "second"), [("circle", "square"), ("triangle", "circle")])
def test_shape_that_changes_fails_as_shape(frames: int, size: int, first: str, second: str):
    rng = np.random.default_rng(5)
    for _ in range(4):
        clip = sample_clip(rng, size, size, shape=first)
        later = render(dataclasses.replace(clip, shape=second), frames, size, size)
        video = render(clip, frames, size, size)
        video[frames // 2 :] = later[frames // 2 :]
        assert _kind(video, clip) == "shape"


def test_colour_that_changes_fails_as_colour() -> None:
    clip = sample_clip(np.random.default_rng(2), colour="red")
    video = render(clip)
    video[4:] = render(dataclasses.replace(clip, colour="cyan"))[4:]
    assert _kind(video, clip) == "colour"


def test_wrong_attributes_fail_for_that_attribute() -> None:
    clip = sample_clip(np.random.default_rng(4), shape="square", colour="green", direction="up")
    video = render(clip)
    assert _kind(video, clip) is None
    assert _kind(video, dataclasses.replace(clip, shape="circle")) == "shape"
    assert _kind(video, dataclasses.replace(clip, colour="yellow")) == "colour"
    assert _kind(video, dataclasses.replace(clip, direction="down")) == "direction"


def test_static_and_barely_moving_objects_fail_as_no_motion() -> None:
    clip = sample_clip(np.random.default_rng(6))
    assert _kind(np.repeat(render(clip)[:1], 8, axis=0), clip) == "no_motion"
    # The world moves things 10-16 px; 3 px is a twitch, not the prompted motion.
    assert _kind(render(dataclasses.replace(clip, distance=3.0)), clip) == "no_motion"


def test_black_and_vanishing_videos_fail_as_empty() -> None:
    clip = sample_clip(np.random.default_rng(8))
    assert _kind(np.zeros((8, 32, 32, 3), dtype=np.uint8), clip) == "empty"
    video = render(clip)
    video[2:5] = 0  # gone in three frames of eight
    assert _kind(video, clip) == "empty"


def test_specks_and_one_bad_frame_are_tolerated() -> None:
    clip = sample_clip(np.random.default_rng(9))
    video = render(clip)
    video[:, 0, 0] = 255  # a one-pixel speck in a corner of every frame
    video[3] = 0  # and one frame of eight lost
    assert _kind(video, clip) is None
