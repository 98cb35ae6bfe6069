"""Concepts the bundled model never saw (the diamond, orange): the world draws them only when
asked (data.novel_fraction), the judge knows them, and `univid eval --prompts novel` asks for
them. The old world's stream and prompts stay exactly as they were."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from univid.cli import main
from univid.config.load import resolve_config
from univid.data.shapes import (
    ALL_COLOURS,
    ALL_SHAPES,
    COLOURS,
    DIRECTIONS,
    NOVEL_COLOURS,
    NOVEL_SHAPES,
    SHAPES,
    ShapeClip,
    ShapesWorld,
    all_prompts,
    novel_pairs,
    render,
    sample_clip,
)
from univid.errors import ConfigError
from univid.eval.groundtruth import add_noise, with_radius
from univid.eval.judge import failure_against, judge
from univid.eval.modes import conditioning_clip, given_indices, judge_mode
from univid.train.batches import open_dataset

# sha256 over clips 0-39 (video bytes, then caption) of ShapesWorld(8, 32, 32, seed=0),
# ShapesWorld(4, 16, 16, seed=7) and ShapesWorld(8, 32, 32, seed=123), computed on main before
# the novel concepts were added (commit 200193a).
OLD_STREAM_SHA256 = "8f42737b4b84fe11ac63997f3719865b2f56abbed560232085a899ac2b9c98d4"
OLD_CAPTIONS = {
    0: "a triangle, blue, moving down",
    7: "a square, red, sliding down",
    123: "the box is yellow and goes upward",
}
SETTINGS = ((0, (8, 32, 32)), (7, (4, 16, 16)), (123, (8, 32, 32)))


def _is_novel(clip: ShapeClip) -> bool:
    return clip.colour in NOVEL_COLOURS or clip.shape in NOVEL_SHAPES


@pytest.mark.parametrize("fraction", [None, 0.0])
def test_old_stream_is_unchanged(fraction: float | None) -> None:
    digest = hashlib.sha256()
    for seed, (frames, height, width) in SETTINGS:
        extra = {} if fraction is None else {"novel_fraction": fraction}
        world = ShapesWorld(frames, height, width, seed=seed, **extra)
        for index in range(40):
            video, caption, _ = world[index]
            digest.update(video.tobytes())
            digest.update(caption.encode())
        assert world[5][1] == OLD_CAPTIONS[seed]
    assert digest.hexdigest() == OLD_STREAM_SHA256


def test_old_prompts_and_vocabulary_are_unchanged() -> None:
    assert SHAPES == ("circle", "square", "triangle") and len(COLOURS) == 7
    world = all_prompts()
    assert world == all_prompts("world") and len(world) == 84
    assert world[:2] == [("red", "circle", "left"), ("red", "circle", "right")]
    novel = all_prompts("novel")
    assert len(novel) == 44 and len(set(novel)) == 44 and not set(novel) & set(world)
    assert all(c in NOVEL_COLOURS or s in NOVEL_SHAPES for c, s, _ in novel)
    # Every triple of the full vocabulary is in exactly one of the two sets.
    assert len(ALL_COLOURS) * len(ALL_SHAPES) * len(DIRECTIONS) == 84 + 44
    with pytest.raises(ValueError):
        all_prompts("everything")


def test_novel_fraction_draws_the_share_asked() -> None:
    world = ShapesWorld(seed=3, novel_fraction=0.3)
    share = np.mean([world.is_novel(i) for i in range(4000)])
    assert abs(share - 0.3) < 0.03, share
    old = ShapesWorld(seed=3)
    pairs: Counter[tuple[str, str]] = Counter()
    for index in range(80):
        video, caption, clip = world[index]
        if world.is_novel(index):
            assert _is_novel(clip), clip
            pairs[(clip.colour, clip.shape)] += 1
            assert clip.colour in caption
            assert "diamond" in caption or "rhombus" in caption or clip.shape != "diamond"
            peak = video.reshape(-1, 3).max(axis=0)
            assert tuple(peak) == ALL_COLOURS[clip.colour]  # the palette colour, fully covered
        else:  # the other clips are the old stream's, index for index
            assert np.array_equal(video, old[index][0]) and caption == old[index][1]
    assert sum(pairs.values()) > 10
    # At fraction 1 every clip is novel, evenly over the 11 pairs.
    every = ShapesWorld(4, 16, 16, seed=5, novel_fraction=1.0)
    drawn = Counter((c.colour, c.shape) for c in (every[i][2] for i in range(1100)))
    assert set(drawn) == set(novel_pairs()) and len(drawn) == 11
    assert min(drawn.values()) > 60 and max(drawn.values()) < 140
    assert world[17][2] == ShapesWorld(seed=3, novel_fraction=0.3)[17][2]  # pure (seed, index)


def test_config_key_reaches_the_training_stream() -> None:
    cfg = resolve_config("tiny", ["data.novel_fraction=0.25"])
    _, dataset, _ = open_dataset(cfg)
    assert isinstance(dataset, ShapesWorld) and dataset.novel_fraction == 0.25
    assert resolve_config("tiny").data.novel_fraction == 0.0
    with pytest.raises(ConfigError, match="data.novel_fraction"):
        resolve_config("tiny", ["data.novel_fraction=1.5"])


def test_diamond_geometry() -> None:
    # Off the supersampling grid, so that no sample lies on the outline.
    clip = ShapeClip("diamond", "white", "right", 6.0, 0.0, (16.06, 16.03))
    cover = render(clip, 1)[0, ..., 0] / 240.0
    assert cover.sum() == pytest.approx(2 * 6.0**2, rel=0.02)  # area 2 r^2
    assert cover[16, 10:22].min() > 0.3 and cover[10, 10] == 0  # corners of the box are empty
    verdict = judge(render(ShapeClip("diamond", "white", "right", 6.0, 12.0, (8.0, 16.0))))
    assert verdict.cross_ratio == pytest.approx(0.4, abs=0.04) and verdict.skewness < 0.05


def _judged_right(frames: int, size: int, sigma: float, seeds: int, shapes=ALL_SHAPES):
    """(right, wrong) ground-truth clips of every colour x shape x direction of the full
    vocabulary, ``seeds`` clips each; of a diamond's first two, one at each end of the radius
    range."""
    rng, right, wrong = np.random.default_rng(11), Counter(), []
    for colour in ALL_COLOURS:
        for shape in shapes:
            for direction in DIRECTIONS:
                for seed in range(seeds):
                    clip = sample_clip(rng, size, size, shape, colour, direction)
                    if shape == "diamond" and seed < 2:
                        clip = with_radius(clip, (4.0, 7.0)[seed] * size / 32, frames, size)
                    video = add_noise(render(clip, frames, size, size), sigma, rng)
                    kind = failure_against(judge(video), colour, shape, direction)
                    if kind:
                        wrong.append((colour, shape, direction, seed, kind))
                    else:
                        right[shape] += 1
    return right, wrong


@pytest.mark.parametrize("sigma", [0.0, 15.0])
def test_judge_is_right_on_all_extended_ground_truth(sigma: float) -> None:
    """The bundled model's size, 8 x 32 px: every clip right, in noise too."""
    right, wrong = _judged_right(8, 32, sigma, 3)
    assert not wrong and sum(right.values()) == 8 * 4 * 4 * 3


def test_judge_at_16_px() -> None:
    # The documented limit (judge.py, DIAMOND_CROSS): at 16 px a 2-3 px diamond is nearly a
    # circle; measured 95 % right (plain). Every other shape stays right.
    right, wrong = _judged_right(4, 16, 0.0, 4)
    assert all(shape == "diamond" for _, shape, *_ in wrong), wrong
    assert right["diamond"] >= 0.85 * 8 * 4 * 4, right
    rng, circles = np.random.default_rng(123), 0
    for index in range(60):  # circles in noise keep their rate (197 of 200 before and after)
        clip = sample_clip(rng, 16, 16, shape="circle", colour=list(ALL_COLOURS)[index % 8])
        video = add_noise(render(clip, 4, 16, 16), 15.0, rng)
        circles += failure_against(judge(video), clip.colour, "circle", clip.direction) is None
    assert circles >= 58


DIAMOND = ShapeClip("diamond", "orange", "right", 5.0, 12.0, (7.0, 16.0))


def test_judge_fails_a_doubled_diamond() -> None:
    for gap in (4.0, 12.0):  # touching (merged into one component) and apart
        shifted = ShapeClip("diamond", "orange", "right", 5.0, 12.0, (7.0, 16.0 + gap))
        video = np.maximum(render(DIAMOND), render(shifted))
        assert failure_against(judge(video), "orange", "diamond", "right") == "extra_object", gap
    assert failure_against(judge(render(DIAMOND)), "orange", "diamond", "right") is None


@pytest.mark.parametrize(("radius", "frames", "size"), [(11.0, 8, 32), (2.0, 8, 32), (5.5, 4, 16)])
def test_judge_fails_a_wrong_size_diamond(radius: float, frames: int, size: int) -> None:
    clip = ShapeClip("diamond", "green", "down", radius, 4.0 * size / 32, (size / 2, size / 2))
    clip = with_radius(clip, radius, frames, size)
    verdict = judge(render(clip, frames, size, size))
    assert verdict.shape == "diamond"
    assert failure_against(verdict, "green", "diamond", "down") == "size"


def test_judge_tells_orange_from_red_and_yellow() -> None:
    video = render(DIAMOND)
    assert judge(video).colour == "orange"
    for wrong in ("red", "yellow"):
        assert failure_against(judge(video), wrong, "diamond", "right") == "colour"
        other = render(ShapeClip("diamond", wrong, "right", 5.0, 12.0, (7.0, 16.0)))
        assert failure_against(judge(other), "orange", "diamond", "right") == "colour"
    # Shape: a diamond is no circle or square, and neither is one a diamond.
    assert failure_against(judge(video), "orange", "circle", "right") == "shape"
    assert failure_against(judge(video), "orange", "square", "right") == "shape"
    for shape in ("circle", "square"):
        clip = ShapeClip(shape, "orange", "right", 5.0, 12.0, (7.0, 16.0))
        assert failure_against(judge(render(clip)), "orange", "diamond", "right") == "shape"


@pytest.mark.parametrize("mode", ["i2v", "extend", "interpolate"])
def test_novel_held_out_clips_pass_every_mode(mode: str) -> None:
    world_clip = conditioning_clip("red", "circle", "left", 9, 32, 32)  # index 0, as before
    assert (
        world_clip.radius
        == sample_clip(
            np.random.default_rng([9, 0, 15_015_015]), 32, 32, "circle", "red", "left"
        ).radius
    )
    starts = set()
    for colour, shape, direction in all_prompts("novel"):
        clip = conditioning_clip(colour, shape, direction, 9, 32, 32)
        starts.add(clip.start)
        video = render(clip)
        given = {t: video[t] for t in given_indices(mode, 8)}
        kind, _ = judge_mode(mode, video, clip, given)
        assert kind is None, (colour, shape, direction, kind)
    assert len(starts) == 44  # each prompt its own held-out clip


def test_cli_eval_novel_prompts_on_a_tiny_model(tmp_path, capsys) -> None:
    run = tmp_path / "tiny"
    argv = ["train", "tiny", "--out", str(run), "train.steps=2", "train.sample_every=0"]
    assert main([*argv, "data.novel_fraction=0.5"]) == 0
    out = tmp_path / "novel.json"
    argv = ["eval", "--model", str(run), "--prompts", "novel", "--seeds", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["prompts"] == report["settings"]["prompts"] == "novel"
    assert report["num_prompts"] == report["num_videos"] == len(report["items"]) == 44
    assert {(i["colour"], i["shape"], i["direction"]) for i in report["items"]} == set(
        all_prompts("novel")
    )
    assert set(report["per_colour"]) == set(ALL_COLOURS) and "diamond" in report["per_shape"]
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["prompts"] == "novel"
    assert main(["eval", "--prompts", "stars", "--out", str(tmp_path / "x.json")]) == 2
