"""The strict judge of long bouncing-world videos passes the world's own 256-frame videos, plain
and in noise, and rejects each way a long generation goes wrong with the rule it breaks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from univid.data.shapes import (
    ALL_COLOURS,
    DIRECTIONS,
    SHAPES,
    BounceClip,
    _coverage,
    render_frames,
    sample_bounce,
)
from univid.eval.groundtruth import add_noise
from univid.eval.long import (
    LONG_FAILURES,
    LONG_REASONS,
    judge_long,
    judge_next_chunk,
    plot_drift,
    summarize_long,
)
from univid.eval.report import wilson_interval

FRAMES, CHUNK = 256, 4
# A red square of radius 4.5 moving 2 px a frame, right (along y = 9) or down (along x = 9).
CLIPS = {
    "right": BounceClip("square", "red", "right", 4.5, 2.0, (14.0, 9.0), (32, 32)),
    "down": BounceClip("square", "red", "down", 4.5, 2.0, (9.0, 14.0), (32, 32)),
}


def _draw(clip: BounceClip, centres: list, radii=None, colours=None) -> np.ndarray:
    """Render ``clip`` at the given centres (and per-frame radii / colours) as uint8 video."""
    video = np.zeros((len(centres), 32, 32, 3), dtype=np.uint8)
    for i, centre in enumerate(centres):
        drawn = dataclasses.replace(clip, radius=radii[i]) if radii else clip
        colour = np.asarray(ALL_COLOURS[colours[i] if colours else clip.colour], np.float32)
        video[i] = np.rint(_coverage(drawn, *centre, 32, 32)[..., None] * colour)
    return video


def _axis(clip: BounceClip) -> int:
    return 0 if clip.direction in ("left", "right") else 1


def _sign(clip: BounceClip, t: float) -> float:
    return np.sign(clip.velocity(t)[_axis(clip)])


def _judge(video: np.ndarray, clip: BounceClip, direction: str | None = None):
    return judge_long(video, clip.colour, clip.shape, direction or clip.direction, CHUNK)


@pytest.mark.parametrize("sigma", [0.0, 15.0])
def test_ground_truth_passes_every_rule(sigma):
    for i, (shape, direction) in enumerate((s, d) for s in SHAPES for d in DIRECTIONS):
        rng = np.random.default_rng([31, i, int(sigma)])
        clip = sample_bounce(rng, shape=shape, direction=direction)
        video = add_noise(render_frames(clip, range(FRAMES)), sigma, rng)
        verdict = _judge(video, clip)
        assert verdict.failure is None and verdict.reasons == (), (clip, verdict.reasons)
        assert verdict.identity == 1.0 and verdict.start_direction == direction
        assert abs(verdict.speed - clip.speed) < 0.1 and verdict.mid_reversals == 0
        assert verdict.reversals >= 10  # it really bounces, many times
        assert len(verdict.radius) == len(verdict.step) == len(verdict.centroid) == FRAMES


def test_every_failure_name_is_known():
    assert LONG_FAILURES == ("identity", "direction", "seam", "speed", "bounce")
    assert set(LONG_REASONS.values()) == set(LONG_FAILURES)


def _wall_frame(clip: BounceClip, start: int) -> int:
    """The first frame from ``start`` on nearest a wall: where the motion turns next."""
    return next(f for f in range(start, start + 40) if _sign(clip, f) != _sign(clip, f + 1))


def _stalled(clip: BounceClip, at: int, extra: int) -> np.ndarray:
    """The clip with frame ``at`` held for ``extra`` more frames, the rest delayed after it."""
    times = [f if f <= at else max(at, f - extra) for f in range(FRAMES)]
    return _draw(clip, [clip.centre(t) for t in times])


@pytest.mark.parametrize("direction", ["right", "down"])
def test_reasons_name_the_fault_a_person_would_see(direction):
    clip = CLIPS[direction]
    axis = _axis(clip)
    # One frame held in mid-flight: a stall, and nothing else is wrong.
    middle = next(f for f in range(100, 140) if abs(clip.centre(f)[axis] - 16) < 2)
    verdict = _judge(_stalled(clip, middle, 1), clip)
    assert verdict.reasons == ("stall",) and verdict.failure == "speed"
    # Two frames held at a wall (the world turns in one): a hesitation at the wall.
    wall = _wall_frame(clip, 100)
    verdict = _judge(_stalled(clip, wall, 2), clip)
    assert verdict.reasons == ("stall_at_wall",) and verdict.failure == "speed"

    # At every bounce, the frame nearest the wall drawn 1.5 px past it: cut by the frame's
    # edge, though the centroid of what is left stays inside.
    def past(by: float) -> np.ndarray:
        centres = [list(clip.centre(f)) for f in range(FRAMES)]
        for f in range(1, FRAMES - 1):
            here, before, after = (centres[g][axis] for g in (f, f - 1, f + 1))
            if (here - before) * (after - here) < 0:  # the turn: the frame nearest the wall
                centres[f][axis] = clip.radius - by if here < 16 else 32 - clip.radius + by
        return _draw(clip, [tuple(c) for c in centres])

    verdict = _judge(past(1.5), clip)
    assert verdict.reasons == ("cut",) and verdict.failure == "bounce"
    # By 0.5 px it is still right: the judge allows WALL_TOLERANCE (1 px).
    assert _judge(past(0.5), clip).reasons == ()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("wall", ["left", "right", "up", "down"])
def test_a_cut_of_two_pixels_is_seen_on_every_shape_and_wall(shape, wall):
    """One frame 2 px past a wall between frames that move towards it and back: whatever the
    shape and whichever wall (a triangle's apex, its base), the object is judged cut or
    outside; the same frame at the wall is neither."""
    clip = sample_bounce(np.random.default_rng([33, len(wall)]), shape=shape, direction=wall)
    axis = 0 if wall in ("left", "right") else 1
    r, towards = clip.radius, 1 if wall in ("right", "down") else -1
    wall_at = 32 - r if towards > 0 else r

    def reasons(past: float) -> set[str]:
        path = [wall_at - towards * 2 * (8 - f) for f in range(8)]  # 2 px a frame to the wall
        path += [wall_at + towards * past] + [wall_at - towards * 2 * f for f in range(1, 9)]
        centres = [tuple(p if a == axis else clip.start[a] for a in range(2)) for p in path]
        return set(_judge(_draw(clip, centres), clip).reasons)  # 17 frames: MIN_FRAMES is 16

    assert {"cut", "outside"} & reasons(2.0)
    assert not {"cut", "outside"} & reasons(0.0)


def test_a_jump_at_a_chunk_border_is_a_seam():
    clip = CLIPS["right"]
    skip = 6.0 / clip.speed  # frames the path skips: 6 px along the motion
    border = next(
        b
        for b in range(100, FRAMES, CHUNK)
        if all(_sign(clip, t) == _sign(clip, b - 2) for t in np.arange(b - 2, b + 4 + skip))
    )
    times = [f if f < border else f + skip for f in range(FRAMES)]
    video = _draw(clip, [clip.centre(t) for t in times])
    verdict = _judge(video, clip)
    assert verdict.failure == "seam"
    assert verdict.max_step > 7.0
    assert verdict.border_error > verdict.inside_error + 0.01


def test_a_colour_change_breaks_identity():
    clip = CLIPS["right"]
    colours = ["red"] * 100 + ["blue"] * (FRAMES - 100)
    video = _draw(clip, [clip.centre(f) for f in range(FRAMES)], colours=colours)
    verdict = _judge(video, clip)
    assert verdict.failure == "identity"
    assert verdict.identity == pytest.approx(100 / FRAMES)
    assert (
        np.nanmean(verdict.colour_error[100:]) > 100 > 10 > np.nanmean(verdict.colour_error[:100])
    )


def test_a_growing_object_breaks_identity():
    clip = CLIPS["right"]
    radii = list(clip.radius * np.linspace(1.0, 1.5, FRAMES))
    verdict = _judge(_draw(clip, [clip.centre(f) for f in range(FRAMES)], radii=radii), clip)
    assert verdict.failure == "identity"
    assert 0.3 < verdict.identity < 0.95
    assert verdict.radius[-1] > 1.4 * verdict.reference_radius


def test_a_second_object_breaks_identity():
    clip = CLIPS["right"]
    video = render_frames(clip, range(FRAMES))
    other = _draw(clip, [(16.0, 24.0)] * 40)
    video[100:140] = np.maximum(video[100:140], other)
    verdict = _judge(video, clip)
    assert verdict.failure == "identity"
    assert verdict.identity == pytest.approx(1 - 40 / FRAMES)


def test_the_wrong_start_direction():
    clip = CLIPS["right"]
    verdict = _judge(render_frames(clip, range(FRAMES)), clip, direction="left")
    assert verdict.failure == "direction" and verdict.start_direction == "right"


def test_a_start_at_the_wall_may_bounce_before_its_first_step():
    clip = dataclasses.replace(CLIPS["right"], start=(26.8, 9.0))  # 0.7 px from the wall
    verdict = _judge(render_frames(clip, range(FRAMES)), clip)
    assert verdict.start_direction == "left" and verdict.failure is None


def test_an_object_that_freezes_stalls():
    clip = CLIPS["right"]
    video = _draw(clip, [clip.centre(min(f, 128)) for f in range(FRAMES)])
    assert _judge(video, clip).failure == "speed"


@pytest.mark.parametrize("direction", ["right", "down"])
def test_an_object_that_leaves_the_frame_does_not_bounce(direction):
    clip = CLIPS[direction]
    axis = _axis(clip)
    # The first bounce off the far wall after frame 240: from there it goes straight on.
    bounce = next(f for f in range(240, 400) if _sign(clip, f) > 0 > _sign(clip, f + 1))
    centres = [list(clip.centre(f)) for f in range(bounce + 9)]
    for f in range(bounce + 1, bounce + 9):
        centres[f][axis] = clip.centre(bounce)[axis] + clip.speed * (f - bounce)
    verdict = _judge(_draw(clip, centres), clip)
    assert verdict.failure == "bounce"
    assert verdict.identity >= 0.95  # only its last frames are cut by the frame's edge


@pytest.mark.parametrize("direction", ["right", "down"])
def test_a_reversal_in_the_middle_of_the_frame_is_not_a_bounce(direction):
    clip = CLIPS[direction]
    axis = _axis(clip)
    turn = next(
        m
        for m in range(128, FRAMES)
        if abs(clip.centre(m)[axis] - 16) < 2 and _sign(clip, m - 1) == _sign(clip, m + 1)
    )
    times = [f if f <= turn else 2 * turn - f for f in range(FRAMES)]
    verdict = _judge(_draw(clip, [clip.centre(t) for t in times]), clip)
    assert verdict.failure == "bounce" and verdict.mid_reversals == 1
    assert "mid_air_turn" in verdict.reasons and "outside" not in verdict.reasons


def test_summary_pools_verdicts_and_plots_drift(tmp_path):
    verdicts = []
    for i, shape in enumerate(SHAPES):
        clip = sample_bounce(np.random.default_rng([32, i]), shape=shape, direction="up")
        verdicts.append(_judge(render_frames(clip, range(FRAMES)), clip))
    wrong = CLIPS["right"]
    verdicts.append(_judge(render_frames(wrong, range(FRAMES)), wrong, direction="left"))
    summary = summarize_long(verdicts, CHUNK)
    assert summary["right"] == 0.75
    assert summary["right_wilson95"] == list(wilson_interval(3, 4))
    assert summary["failures"] == {k: (0.25 if k == "direction" else 0.0) for k in LONG_FAILURES}
    assert summary["reasons"] == {k: (0.25 if k == "direction" else 0.0) for k in LONG_REASONS}
    assert summary["identity"] == 1.0
    seam = summary["seam"]
    assert seam["videos"] == 4 and seam["border_error"] < 0.2 and seam["inside_error"] < 0.2
    low, high = seam["difference_t95"]
    assert type(low) is float and type(high) is float  # JSON-ready
    assert low <= seam["difference"] <= high
    drift = summary["drift"]
    assert all(len(drift[k]) == FRAMES for k in ("radius", "colour_error", "speed"))
    assert drift["speed"][0] is None
    assert max(abs(r - 1) for r in drift["radius"]) < 0.05
    path = tmp_path / "drift.png"
    plot_drift(summary, path)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 300 and (image[..., 2] > image[..., 0] + 100).any()  # a blue line


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        judge_long(np.zeros((8, 32, 32, 3), np.uint8), "red", "square", "right", CHUNK)
    with pytest.raises(ValueError):
        summarize_long([], CHUNK)


def _window(clip: BounceClip, start: int, frames: int = 20) -> np.ndarray:
    return render_frames(clip, range(start, start + frames))


def _free_start(clip: BounceClip) -> int:
    """A start whose last 6 frames (context's last, the chunk) move one way, off the walls."""
    return next(s for s in range(40) if len({_sign(clip, t) for t in range(s + 14, s + 20)}) == 1)


@pytest.mark.parametrize("direction", ["right", "down"])
def test_next_chunk_judge_passes_the_truth_and_fails_each_fault(direction):
    clip = CLIPS[direction]
    truth = _window(clip, _free_start(clip))

    def judge(chunk: np.ndarray):
        made = np.concatenate([truth[:16], chunk])
        return judge_next_chunk(made, truth, clip.colour, clip.shape, direction, 16)

    right = judge(truth[16:])
    assert not right.stall and not right.wrong_way and right.error == 0.0
    frozen = judge(np.concatenate([truth[16:18], truth[17:19]]))  # frame 18 repeats 17
    assert frozen.stall and not frozen.wrong_way and frozen.error >= clip.speed * 0.9
    back = judge(truth[12:16][::-1])  # the chunk runs back over the context
    assert back.wrong_way and back.error > 3 * clip.speed
    lost = judge(np.zeros_like(truth[16:]))
    assert lost.error == float("inf")


def test_next_chunk_judge_refuses_bad_input():
    video = np.zeros((20, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError):
        judge_next_chunk(video, video[:19], "red", "square", "right", 16)
    with pytest.raises(ValueError):
        judge_next_chunk(video, video, "red", "square", "right", 20)
