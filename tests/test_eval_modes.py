"""The judge of videos made from given frames (univid eval --mode i2v|extend|interpolate) passes the
world's own clips and fails what a person would reject; `univid eval --mode i2v` writes its report.

Most tests need no model: hand-made videos go straight to the judging functions.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import univid.eval.report as report_module
from univid.cli import build_parser, main
from univid.config.sections import EVAL_MODES
from univid.data.shapes import ShapeClip, all_prompts, canonical_prompt, render
from univid.eval.groundtruth import add_noise
from univid.eval.modes import (
    MODE_FAILURES,
    conditioning_clip,
    given_indices,
    judge_mode,
)
from univid.eval.report import run_eval

GIVEN_MODES = tuple(m for m in EVAL_MODES if m != "t2v")
# A red circle of radius 5 from x = 8 to 22 at y = 16 (32 px, 8 frames: 2 px a frame), with
# room on every side to move it.
CLIP = ShapeClip("circle", "red", "right", 5.0, 14.0, (8.0, 16.0))


def _judge(mode: str, video: np.ndarray, clip: ShapeClip = CLIP) -> tuple[str | None, dict]:
    """Judge ``video`` as made in ``mode`` from the given frames of ``clip``'s rendering."""
    truth = render(clip, *video.shape[:3])
    given = {t: truth[t] for t in given_indices(mode, len(video))}
    return judge_mode(mode, video, clip, given)


def _generated(mode: str, frames: int = 8) -> list[int]:
    return [t for t in range(frames) if t not in given_indices(mode, frames)]


def _with(mode: str, changed: ShapeClip, frames: list[int] | None = None) -> np.ndarray:
    """CLIP's video whose generated frames (or ``frames``) are taken from ``changed``'s."""
    video, other = render(CLIP), render(changed)
    picks = _generated(mode) if frames is None else frames
    video[picks] = other[picks]
    return video


def _moved(clip: ShapeClip, dx: float, dy: float) -> ShapeClip:
    return dataclasses.replace(clip, start=(clip.start[0] + dx, clip.start[1] + dy))


@pytest.mark.parametrize("mode", GIVEN_MODES)
@pytest.mark.parametrize(("frames", "size"), [(8, 32), (4, 16)])
def test_world_clips_pass_every_mode(mode: str, frames: int, size: int) -> None:
    """The renderer's own held-out clips, generated frames in background noise, all pass."""
    rng = np.random.default_rng(0)
    for colour, shape, direction in all_prompts()[::3]:
        clip = conditioning_clip(colour, shape, direction, 1_000_000, size, size)
        truth = render(clip, frames, size, size)
        given = {t: truth[t] for t in given_indices(mode, frames)}
        noisy = add_noise(truth, 15.0, rng)
        for t, image in given.items():
            noisy[t] = image
        for video in (truth, noisy):
            kind, checks = judge_mode(mode, video, clip, given)
            assert kind is None, (clip, checks)
        assert checks["jump"] < 0.5 and 0.8 < checks["size_ratio"] < 1.2


@pytest.mark.parametrize("mode", GIVEN_MODES)
def test_a_given_frame_off_by_one_value_fails(mode: str) -> None:
    video = render(CLIP)
    video[given_indices(mode, 8)[-1], 0, 0, 2] += 1  # one background pixel, one level of blue
    assert _judge(mode, video)[0] == "given_changed"


@pytest.mark.parametrize("mode", GIVEN_MODES)
@pytest.mark.parametrize(("dx", "dy"), [(0, 4), (0, -4), (4, 0)])
def test_jumping_4_px_at_the_first_generated_frame_fails(mode: str, dx: int, dy: int) -> None:
    """From the first generated frame on, the object sits 4 px off (across or ahead)."""
    video = _with(mode, _moved(CLIP, dx, dy))
    if mode == "interpolate":  # the last frame is given: only the first generated one is off
        video[_generated(mode)[1:]] = render(CLIP)[_generated(mode)[1:]]
    kind, checks = _judge(mode, video)
    assert kind == "jump" and checks["jump"] > 3.5


def test_i2v_allows_any_world_speed_but_not_a_faster_one() -> None:
    """One given frame does not say how fast: every speed of the world passes, 2x the fastest
    fails. The direction comes from the prompt."""
    for distance in (10.0, 16.0):
        assert _judge("i2v", render(dataclasses.replace(CLIP, distance=distance)))[0] is None
    video = _with("i2v", dataclasses.replace(CLIP, distance=32.0), [1])  # 4.6 px in one frame
    assert _judge("i2v", video)[0] == "jump"


@pytest.mark.parametrize("mode", GIVEN_MODES)
def test_colour_or_shape_change_after_the_given_frames_fails(mode: str) -> None:
    for changed in (
        dataclasses.replace(CLIP, colour="blue"),
        dataclasses.replace(CLIP, shape="square"),
    ):
        kind = _judge(mode, _with(mode, changed))[0]
        # Most frames changed: the whole video is the wrong colour or shape for the prompt.
        assert kind in ("colour", "shape", "identity"), (changed, kind)
        # Only the last generated frame changed: the strict judge lets 1 in 8 go; identity not.
        assert _judge(mode, _with(mode, changed, _generated(mode)[-1:]))[0] == "identity"


@pytest.mark.parametrize("mode", GIVEN_MODES)
@pytest.mark.parametrize("factor", [1.5, 1 / 1.5])
def test_size_change_after_the_given_frames_fails(mode: str, factor: float) -> None:
    """Both sizes are inside the world's range (radius 5 -> 7.5 or 3.3): only identity fails."""
    changed = dataclasses.replace(CLIP, radius=CLIP.radius * factor)
    kind, checks = _judge(mode, _with(mode, changed))
    assert kind == "identity", checks
    assert abs(checks["size_ratio"] - factor) < 0.1


@pytest.mark.parametrize("mode", GIVEN_MODES)
def test_a_doubled_object_fails(mode: str) -> None:
    """A second copy in one generated frame (the strict judge lets 1 frame in 8 go; with given
    frames none may), or two touching copies 5 px apart in every generated frame."""
    video = render(CLIP)
    last = _generated(mode)[-1]
    video[last] = np.maximum(video[last], render(_moved(CLIP, 0, -11))[last])
    assert _judge(mode, video)[0] == "extra_object"
    video = render(CLIP)
    video[_generated(mode)] = np.maximum(video, render(_moved(CLIP, 0, 5)))[_generated(mode)]
    assert _judge(mode, video)[0] == "extra_object"


def test_interpolation_that_stops_half_way_fails() -> None:
    """Frames 1-6 walk to the middle and stay; the given last frame is then a jump."""
    video = render(CLIP)
    half = render(dataclasses.replace(CLIP, distance=CLIP.distance / 2), 8)
    video[1:4] = render(CLIP)[1:4]
    video[4:7] = half[7]
    kind, checks = _judge("interpolate", video)
    assert kind == "jump" and checks["backstep"] == 0.0


def test_interpolation_that_ends_off_the_last_frame_fails() -> None:
    """The generated frames head 5 px below the given last frame."""
    video = render(CLIP)
    for t in range(1, 7):  # along the path, drifting down (whole rows) to 5 px off at frame 7
        video[t] = np.roll(video[t], round(5 * t / 7), axis=0)
    kind, checks = _judge("interpolate", video)
    assert kind in ("jump", "motion") and "motion" in checks["broken"] and checks["path"] > 2


def test_interpolation_that_goes_back_fails() -> None:
    video = render(CLIP)
    video[3] = render(CLIP)[5]
    video[4] = render(CLIP)[3]  # forward 4 px, back 4 px, on again: on the path but reversing
    kind, checks = _judge("interpolate", video)
    assert "motion" in checks["broken"] and checks["backstep"] > 3


def test_extension_that_turns_back_fails() -> None:
    """The first generated frame is where it should be, then the object goes back."""
    video = render(CLIP)
    video[5:] = render(CLIP)[[3, 2, 1]]
    kind, checks = _judge("extend", video)
    assert kind is not None and "motion" in checks["broken"] and checks["direction"] != "right"


def _world_generator(prompts: list[str], seeds: list[int], given: list[dict]) -> np.ndarray:
    """A 'model' that returns the held-out clip whose frames it was given (8 x 32 px)."""
    attributes = {canonical_prompt(*p): p for p in all_prompts()}
    videos = []
    for prompt, seed, frames in zip(prompts, seeds, given, strict=True):
        clip = conditioning_clip(*attributes[prompt], seed, 32, 32)
        video = render(clip, 8, 32, 32)
        assert all(np.array_equal(video[t], image) for t, image in frames.items())
        videos.append(video)
    return np.stack(videos)


@pytest.mark.parametrize("mode", GIVEN_MODES)
def test_run_eval_in_a_mode_reports_it(mode: str, monkeypatch) -> None:
    monkeypatch.setattr(report_module, "all_prompts", lambda *_: all_prompts()[::7])
    report, _ = run_eval(_world_generator, 1, progress=False, mode=mode, size=(8, 32, 32))
    assert report["mode"] == mode and report["all_correct"] == report["num_videos"] == 12
    assert list(report["failures"]) == list(MODE_FAILURES)
    assert report["items"][0]["conditioning"]["given"] == given_indices(mode, 8)

    def ignores_given(prompts, seeds, given):  # a t2v answer: right prompt, given frames lost
        return np.roll(_world_generator(prompts, seeds, given), 1, axis=1)

    report, _ = run_eval(ignores_given, 1, progress=False, mode=mode, size=(8, 32, 32))
    assert report["failures"]["given_changed"] == 12 and report["all_correct"] == 0
    assert report["all_correct_wilson95"][1] < 0.3


def test_eval_mode_option() -> None:
    assert build_parser().parse_args(["eval"]).mode == "t2v"
    assert main(["eval", "--mode", "v2v"]) == 2


@pytest.fixture(scope="module")
def per_frame_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "per-frame"
    mix = [f"flow.mix_{m}=1" for m in ("i2v", "extend", "interpolate", "per_frame")]
    argv = ["train", "tiny", "--out", str(out), "model.patch=1,4,4", *mix, "train.steps=2"]
    assert main([*argv, "train.sample_every=0"]) == 0
    return out


def test_cli_eval_i2v_writes_a_report_with_its_mode(per_frame_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report_module, "all_prompts", lambda *_: all_prompts()[:2])
    out = tmp_path / "i2v.json"
    argv = ["eval", "--model", str(per_frame_run), "--mode", "i2v", "--seeds", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == report["settings"]["mode"] == "i2v" and report["num_videos"] == 2
    assert list(report["failures"]) == list(MODE_FAILURES)
    # The pipeline returns given frames exactly, whatever the untrained model makes of the rest.
    assert all(item["failure"] != "given_changed" for item in report["items"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["mode"] == "i2v" and printed["failures"] == report["failures"]
    assert out.with_suffix(".png").stat().st_size > 0
