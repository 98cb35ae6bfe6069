"""The strict judge of long bouncing-world videos (``univid eval --mode long``).

A long video (256 frames or more, made chunk by chunk) is right when a person watching it would
see the prompt's one object, the same all the way through, start moving the prompted way and
bounce off the frame's edges at the world's speed, with nothing to show where one chunk ends and
the next begins. :func:`judge_long` measures each of these on the per-frame readings of the
strict judge (:func:`univid.eval.judge.frame_objects`) and names the first broken rule of
:data:`LONG_FAILURES`; :func:`summarize_long` pools verdicts (share right with its Wilson
interval, seam statistics at chunk borders against those inside chunks, and drift of size,
colour and speed against frame index), and :func:`plot_drift` draws that drift as a PNG.

Positions are the object's box centre (a triangle's centroid sits r/3 below it), so the walls
are where the world puts them: the centre stays in [r, size - r] on each axis. Tolerances are in
pixels at the 32-px reference and scale with the frame size. Figures below were measured on 240
ground-truth videos of 256 frames at 32x32 (sample_bounce of seeds [777, i], i < 120, shapes and
directions in turn, rendered by render_frames, plain and with Gaussian noise of sigma 15; see
the module's tests): every one holds one object of its colour and shape in every frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import stats as scipy_stats

from univid.data.shapes import (
    ALL_COLOURS,
    DIRECTION_VECTORS,
    RADIUS_RANGE,
    REFERENCE_SIZE,
    SPEED_RANGE,
)
from univid.eval.judge import MERGED_MISFIT, SIZE_TOLERANCE, frame_objects
from univid.eval.report import wilson_interval

# Why a long video is wrong, in the order they are checked; the first that applies is the failure.
LONG_FAILURES: tuple[str, ...] = (
    "identity",  # fewer than IDENTITY_SHARE of the frames show the prompt's one object, unchanged
    "direction",  # the first motion is not the prompted way (and no wall explains it)
    "seam",  # a frame-to-frame centroid step above SEAM_FACTOR x the video's speed
    "speed",  # speed outside the world's, drifting over the video, or the object stalls
    "bounce",  # leaves the frame, drifts off its axis, or reverses away from a wall
)

# Every way a long video breaks a rule, and the rule (of LONG_FAILURES) it breaks. A verdict
# names all that apply (``LongVerdict.reasons``), not just the first rule: what to fix.
LONG_REASONS: dict[str, str] = {
    "identity": "identity",  # the prompt's one object, at its first size, in too few frames
    "direction": "direction",  # the first motion goes against the prompt
    "seam": "seam",  # a step above SEAM_FACTOR x the video's speed
    "speed_range": "speed",  # the video's speed outside the world's (widened)
    "speed_window": "speed",  # a SPEED_WINDOW stretch too slow or too fast for the video
    "stall": "speed",  # a still step away from every wall
    "stall_at_wall": "speed",  # two still steps in a row (the world folds in one)
    "outside": "bounce",  # the centre past a wall (its centroid, which a cut moves inwards)
    "cut": "bounce",  # at the frame's edge, shorter across it than just before and after
    "off_axis": "bounce",  # drifts across its axis of motion
    "mid_air_turn": "bounce",  # reverses away from every wall
}

# Share of frames that must show exactly one object of the prompt's colour and (clear) shape,
# of the video's own size (the figure). Ground truth: 1.000 in every video.
IDENTITY_SHARE = 0.95
# The video's own size is the median fitted radius over its first REFERENCE_CHUNKS chunks (at
# least REFERENCE_FRAMES frames); a frame keeps it when its radius is within this fraction of
# it. Ground truth strays by at most 3.1 % (plain) and 4.2 % (noise); 20 % is a visible change
# (the area by a third) and passes a generated object's frame-to-frame wobble.
RADIUS_TOLERANCE = 0.2
REFERENCE_CHUNKS = 2
REFERENCE_FRAMES = 8
# The start direction is read from the first moving step within this many frames.
DIRECTION_FRAMES = 8
# The shortest video judged: the start direction and one more window of frames after it.
MIN_FRAMES = 2 * DIRECTION_FRAMES
# A seam is a step above this multiple of the video's speed (the median step, clamped to the
# world's SPEED_RANGE). The video's own speed, not the world's largest, since a jump of 5 px in a
# video moving 1.5 px a frame is a seam, and 2 x 2.5 px would let it pass; clamped, so a video
# that mostly stands still (or races) is not judged against a speed it never should have had:
# those are "speed" failures. Ground truth's largest step is 1.17 x its speed (noise; 1.15
# plain): anti-aliasing moves the centroid by up to 0.21 px from the true centre.
SEAM_FACTOR = 2.0
# The speed (median step) lies within SPEED_RANGE widened by this factor either way, and so
# does the median step of every SPEED_WINDOW frames against the video's speed. Ground truth:
# the video's speed is the clip's to within 0.09 px; window medians stray by at most 10 %.
SPEED_TOLERANCE = 1.4
SPEED_WINDOW = 16
# A step that moves less than this share of the speed along the axis is "still". The world makes
# one such step at a bounce (its path folds at the wall between two frames); a still step away
# from a wall, or two in a row, is a stall.
STILL_FRACTION = 0.25
# Slack, in px, for the walls: the centre stays within [r - tol, size - r + tol], and a reversal
# is at a wall when its turning frame is within speed + tol of one. Ground truth's measured
# centre is off the true one by at most 0.16 px (plain) and 0.21 px (noise).
WALL_TOLERANCE = 1.0
# A frame whose object touches the frame's edge is cut when its extent across that edge falls
# short of the median extent of the frames within CUT_WINDOW that touch no edge by more than
# WALL_TOLERANCE. The centroid alone cannot tell: a cut moves it inwards, by 0.66 px for a
# square cut 3 px deep and not at all for a triangle cut at its base. The extent reads a
# square's cut exactly, a circle's and a triangle's base and sides to 0.3 px, a triangle's apex
# short (3 px reads 1.75; the centroid rule reads that one, 2.07). Ground truth: 0.50 px at
# most (plain; 0.38 in noise) over about 800 frames at the edge.
CUT_WINDOW = 8
# The centre may drift off the motion's axis (across it) by this many px from its start. Ground
# truth drifts at most 0.08 px (plain) and 0.15 px (noise).
DRIFT_TOLERANCE = 2.0


@dataclass(frozen=True)
class LongVerdict:
    """The judged measurements of one long video (nan = not measurable) and its failure.

    Per-frame series (length T, nan where a frame shows no object) are for drift plots:
    ``step`` is the centroid step into each frame (nan at frame 0), whatever the frames show;
    the rules on motion use only steps between frames that keep the identity."""

    failure: str | None
    frames: int
    chunk: int
    identity: float  # share of frames with the prompt's one object at the video's size
    start_direction: str | None  # the way the first moving step goes
    speed: float  # median centroid step, px per frame
    max_step: float  # largest centroid step, px
    border_error: float  # mean |step - speed| over steps across chunk borders (off walls)
    inside_error: float  # the same over steps inside chunks
    drift: float  # largest distance across the axis from the start, px
    reversals: int  # reversals of the motion along its axis
    mid_reversals: int  # of which away from every wall
    reference_radius: float  # median radius of the first chunks, px
    reasons: tuple[str, ...] = ()  # every rule broken (LONG_REASONS' keys); () when right
    radius: tuple[float, ...] = ()
    colour_error: tuple[float, ...] = ()  # RGB distance of the object's colour to the palette's
    step: tuple[float, ...] = ()
    centroid: tuple[tuple[float, float], ...] = ()  # box centre (x, y), px


def _track(video: np.ndarray, colour: str, shape: str) -> dict[str, np.ndarray]:
    """Per frame: object count, box centre (x, y), radius, colour error and whether the frame
    shows the prompt's colour and (where its vote is clear) shape as one unmerged object."""
    counts, stats = frame_objects(video)
    frames = len(counts)
    track = {k: np.full(frames, np.nan) for k in ("x", "y", "radius", "colour_error")}
    track["count"] = np.asarray(counts)
    track["kind"] = np.zeros(frames, dtype=bool)
    track["extent"] = np.full((frames, 2), np.nan)  # along x, along y
    track["edges"] = np.zeros((frames, 4), dtype=bool)  # left, right, top, bottom
    palette = np.asarray(ALL_COLOURS[colour], dtype=np.float64)
    for s in stats:
        t = s["t"]
        track["x"][t], track["radius"][t] = s["x"], s["radius"]
        track["extent"][t], track["edges"][t] = s["extent"], s["edges"]
        # A triangle's centroid sits r/3 below its box centre (univid.data.shapes._coverage).
        track["y"][t] = s["y"] - (s["radius"] / 3 if shape == "triangle" else 0.0)
        mean = s["pixels"].astype(np.float64).mean(axis=0)
        track["colour_error"][t] = float(np.linalg.norm(mean - palette))
        track["kind"][t] = (
            s["single"]
            and s["colour"] == colour
            and s["vote"] in (None, shape)
            and s["misfit"] <= MERGED_MISFIT
        )
    return track


def _identity(track: dict, reference: int, scale: float) -> tuple[np.ndarray, float]:
    """(whether each frame keeps the identity, reference radius)."""
    radius = track["radius"]
    first = radius[:reference][track["kind"][:reference]]
    ref = float(np.median(first)) if first.size else float("nan")
    low = RADIUS_RANGE[0] * scale / SIZE_TOLERANCE
    high = RADIUS_RANGE[1] * scale * SIZE_TOLERANCE
    with np.errstate(invalid="ignore"):
        keeps = np.abs(radius / ref - 1) <= RADIUS_TOLERANCE
        sized = (radius >= low) & (radius <= high)
    return track["kind"] & keeps & sized, ref


def _cut(track: dict, tolerance: float) -> bool:
    """Whether a frame at the frame's edge is shorter across that edge than its neighbours off
    every edge (the median over CUT_WINDOW frames either side) by more than ``tolerance``."""
    extent, edges = track["extent"], track["edges"]
    touches = edges.any(axis=1)
    free = ~touches & np.isfinite(extent[:, 0])
    for t in np.flatnonzero(touches):
        near = slice(max(0, t - CUT_WINDOW), t + CUT_WINDOW + 1)
        if free[near].sum() < 3:
            continue
        reference = np.median(extent[near][free[near]], axis=0)
        for axis, sides in ((0, slice(0, 2)), (1, slice(2, 4))):
            if edges[t, sides].any() and reference[axis] - extent[t, axis] > tolerance:
                return True
    return False


def _near_wall(position: np.ndarray, limits: tuple[float, float], reach: float) -> np.ndarray:
    """Whether each position lies within ``reach`` of a wall (the centre's limits)."""
    with np.errstate(invalid="ignore"):
        return (position <= limits[0] + reach) | (position >= limits[1] - reach)


def _start_direction(axis_pos: np.ndarray, step_sign: int, still: float) -> int:
    """Sign (+1/-1) of the first moving step along the axis within DIRECTION_FRAMES, 0 if none."""
    steps = np.diff(axis_pos[:DIRECTION_FRAMES])
    moving = np.flatnonzero(np.abs(np.nan_to_num(steps)) >= still)
    return int(np.sign(steps[moving[0]])) if moving.size else 0


def _direction_ok(sign: int, step: int, first: float, limits: tuple, reach: float) -> bool:
    """The first motion goes the prompted way, or the opposite way from a start within reach of
    the prompted wall (the object bounced before its first step)."""
    if sign == step:
        return True
    wall = limits[1] if step > 0 else limits[0]
    return sign == -step and abs(first - wall) <= reach


def _stalls(axis_steps: np.ndarray, near: np.ndarray, still: float) -> tuple[bool, bool]:
    """(a still step away from a wall, two still steps in a row)."""
    with np.errstate(invalid="ignore"):
        still_steps = np.abs(axis_steps) < still
    at_wall = near[:-1] | near[1:]
    return bool((still_steps & ~at_wall).any()), bool((still_steps[1:] & still_steps[:-1]).any())


def _window_speeds_ok(steps: np.ndarray, speed: float) -> bool:
    """Every SPEED_WINDOW frames' median step within SPEED_TOLERANCE of the video's speed."""
    for start in range(0, len(steps), SPEED_WINDOW):
        window = steps[start : start + SPEED_WINDOW]
        window = window[np.isfinite(window)]
        if window.size >= SPEED_WINDOW // 2:
            ratio = float(np.median(window)) / speed
            if not 1 / SPEED_TOLERANCE <= ratio <= SPEED_TOLERANCE:
                return False
    return True


def _reversals(axis_pos: np.ndarray, limits: tuple, still: float, reach: float) -> tuple[int, int]:
    """(reversals, of which away from a wall): sign changes between consecutive moving steps;
    the turning point is the extreme position between them, which must be within ``reach`` of
    the wall on its side."""
    steps = np.diff(axis_pos)
    moving = np.flatnonzero(np.abs(np.nan_to_num(steps)) >= still)
    total = mid = 0
    for before, after in zip(moving[:-1], moving[1:], strict=True):
        sign = np.sign(steps[before])
        if sign == np.sign(steps[after]):
            continue
        total += 1
        between = axis_pos[before + 1 : after + 1]
        turn = np.nanmax(between) if sign > 0 else np.nanmin(between)
        wall = limits[1] if sign > 0 else limits[0]
        mid += bool(abs(turn - wall) > reach)
    return total, mid


def _seam_errors(steps: np.ndarray, free: np.ndarray, speed: float, chunk: int):
    """Mean |step - speed| over free steps (off walls) across chunk borders, and inside chunks.
    Step f goes from frame f to f + 1; it crosses a border when f + 1 is a multiple of chunk."""
    error = np.abs(steps - speed)
    border = (np.arange(len(steps)) + 1) % chunk == 0
    usable = free & np.isfinite(error)

    def mean(mask: np.ndarray) -> float:
        return float(error[mask].mean()) if mask.any() else float("nan")

    return mean(usable & border), mean(usable & ~border)


def judge_long(
    video: np.ndarray, colour: str, shape: str, direction: str, chunk: int
) -> LongVerdict:
    """Judge one uint8 long video (T, H, W, 3) made ``chunk`` frames at a time against the
    prompt's colour, shape and start direction; the failure is the first of LONG_FAILURES."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] < MIN_FRAMES:
        raise ValueError(f"expected a (T >= {MIN_FRAMES}, H, W, 3) video, got {video.shape}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    frames, height, width, _ = video.shape
    scale = min(height, width) / REFERENCE_SIZE
    track = _track(video, colour, shape)
    reference = max(REFERENCE_CHUNKS * chunk, REFERENCE_FRAMES)
    kept, ref_radius = _identity(track, reference, scale)

    step_x, step_y = DIRECTION_VECTORS[direction]
    on_x = step_x != 0
    pos, across = (track["x"], track["y"]) if on_x else (track["y"], track["x"])
    size, size_across = (width, height) if on_x else (height, width)
    limits = (ref_radius, size - ref_radius)
    raw_steps = np.hypot(np.diff(track["x"]), np.diff(track["y"]))
    # Motion is measured only between frames that both show the object whole: one cut by the
    # frame's edge or changed says nothing about speed (those frames are the other rules' own).
    steps = np.where(kept[:-1] & kept[1:], raw_steps, np.nan)
    speed = float(np.nanmedian(steps)) if np.isfinite(steps).any() else float("nan")
    world = (SPEED_RANGE[0] * scale, SPEED_RANGE[1] * scale)
    ref_speed = float(np.clip(np.nan_to_num(speed), *world))
    still = STILL_FRACTION * ref_speed
    tolerance = WALL_TOLERANCE * scale
    reach = ref_speed + tolerance
    near = _near_wall(pos, limits, reach)
    sign = _start_direction(pos, step_x + step_y, still)
    first = pos[np.isfinite(pos)][0] if np.isfinite(pos).any() else float("nan")
    with np.errstate(invalid="ignore"):
        drift = float(np.nanmax(np.abs(across - np.nanmedian(across[:reference]))))
        outside = not all(
            bool(
                np.all(
                    (p[np.isfinite(p)] >= ref_radius - tolerance)
                    & (p[np.isfinite(p)] <= extent - ref_radius + tolerance)
                )
            )
            for p, extent in ((pos, size), (across, size_across))
        )
    reversals, mid = _reversals(pos, limits, still, reach)
    border_error, inside_error = _seam_errors(steps, ~(near[:-1] | near[1:]), speed, chunk)
    max_step = float(np.nanmax(steps)) if np.isfinite(steps).any() else float("nan")

    stall, stall_at_wall = _stalls(np.where(np.isfinite(steps), np.diff(pos), np.nan), near, still)
    broken = {
        "identity": float(kept.mean()) < IDENTITY_SHARE,
        "direction": not _direction_ok(sign, step_x + step_y, first, limits, reach),
        "seam": max_step > SEAM_FACTOR * ref_speed,
        "speed_range": not world[0] / SPEED_TOLERANCE <= speed <= world[1] * SPEED_TOLERANCE,
        "speed_window": not _window_speeds_ok(steps, speed),
        "stall": stall,
        "stall_at_wall": stall_at_wall,
        "outside": outside,
        "cut": _cut(track, tolerance),
        "off_axis": not drift <= DRIFT_TOLERANCE * scale,
        "mid_air_turn": mid > 0,
    }
    reasons = tuple(reason for reason in LONG_REASONS if broken[reason])
    rules = {LONG_REASONS[reason] for reason in reasons}
    failure = next((kind for kind in LONG_FAILURES if kind in rules), None)
    names = {1: "right", -1: "left"} if on_x else {1: "down", -1: "up"}
    return LongVerdict(
        failure=failure,
        reasons=reasons,
        frames=frames,
        chunk=chunk,
        identity=float(kept.mean()),
        start_direction=names.get(sign),
        speed=speed,
        max_step=max_step,
        border_error=border_error,
        inside_error=inside_error,
        drift=drift,
        reversals=reversals,
        mid_reversals=mid,
        reference_radius=ref_radius,
        radius=tuple(float(r) for r in track["radius"]),
        colour_error=tuple(float(c) for c in track["colour_error"]),
        step=(float("nan"), *(float(s) for s in raw_steps)),
        centroid=tuple((float(x), float(y)) for x, y in zip(track["x"], track["y"], strict=True)),
    )


@dataclass(frozen=True)
class ChunkVerdict:
    """One chunk made after ground-truth context, against the world's own continuation."""

    stall: bool  # a step that stands still where the truth moves
    wrong_way: bool  # a step against the truth's
    error: float  # the largest distance (px) of the chunk's centres from the truth's; inf: lost


def judge_next_chunk(
    made: np.ndarray, truth: np.ndarray, colour: str, shape: str, direction: str, context: int
) -> ChunkVerdict:
    """Judge a chunk made from ``context`` frames of a bouncing clip against the clip itself:
    ``made`` and ``truth`` (T, H, W, 3) share their first ``context`` frames. Steps run from
    the last context frame through the chunk; a truth step that folds at a wall (less than half
    the truth's speed) is not judged for stalls or direction."""
    made, truth = np.asarray(made), np.asarray(truth)
    if made.shape != truth.shape or made.ndim != 4 or not 1 <= context < made.shape[0]:
        raise ValueError(
            f"expected two (T, H, W, 3) videos of one shape and 1 <= context < T, got "
            f"{made.shape}, {truth.shape} and context {context}"
        )
    axis = "x" if DIRECTION_VECTORS[direction][0] else "y"
    tracks = [_track(v, colour, shape) for v in (made, truth)]
    (mx, my, mpos), (tx, ty, tpos) = ((t["x"], t["y"], t[axis]) for t in tracks)
    speed = float(np.nanmedian(np.abs(np.diff(tpos))))
    made_steps, true_steps = np.diff(mpos[context - 1 :]), np.diff(tpos[context - 1 :])
    moving = np.abs(true_steps) >= 0.5 * speed
    with np.errstate(invalid="ignore"):
        goes = np.abs(made_steps) >= STILL_FRACTION * speed
        stall = bool((moving & ~goes & np.isfinite(made_steps)).any())
        wrong = bool((moving & goes & (np.sign(made_steps) != np.sign(true_steps))).any())
    distance = np.hypot(mx[context:] - tx[context:], my[context:] - ty[context:])
    error = float(distance.max()) if np.isfinite(distance).all() else math.inf
    return ChunkVerdict(stall=stall, wrong_way=wrong, error=error)


def _nan_to_none(values: list[float]) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def _drift_series(verdicts: list[LongVerdict]) -> dict[str, list[float | None]]:
    """Per frame index, averaged over the videos that have it: radius over the video's reference
    radius, colour error (RGB distance to the palette colour) and the step over the video's speed.
    Ratios take out each video's own size and speed, so the mean line shows drift alone."""
    frames = max(v.frames for v in verdicts)

    def mean(rows: list[np.ndarray]) -> list[float | None]:
        table = np.full((len(rows), frames), np.nan)
        for i, row in enumerate(rows):
            table[i, : len(row)] = row
        counts = np.isfinite(table).sum(axis=0)
        sums = np.nansum(table, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return _nan_to_none(list(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)))

    return {
        "radius": mean([np.asarray(v.radius) / v.reference_radius for v in verdicts]),
        "colour_error": mean([np.asarray(v.colour_error) for v in verdicts]),
        "speed": mean([np.asarray(v.step) / v.speed for v in verdicts]),
    }


def _seam_statistics(verdicts: list[LongVerdict]) -> dict:
    """Border against inside step error: the means over videos, and the mean per-video
    difference (border - inside) with its 95 % t interval (a video is the unit: its steps share
    its speed and noise). A difference whose interval covers 0 shows no seam on average."""
    pairs = np.asarray(
        [
            (v.border_error, v.inside_error)
            for v in verdicts
            if math.isfinite(v.border_error) and math.isfinite(v.inside_error)
        ]
    ).reshape(-1, 2)
    if not len(pairs):
        return dict.fromkeys(("border_error", "inside_error", "difference", "difference_t95")) | {
            "videos": 0
        }
    difference = pairs[:, 0] - pairs[:, 1]
    result = {
        "videos": len(pairs),
        "border_error": float(pairs[:, 0].mean()),
        "inside_error": float(pairs[:, 1].mean()),
        "difference": float(difference.mean()),
        "difference_t95": None,
    }
    if len(pairs) >= 2:
        half = float(scipy_stats.t.ppf(0.975, len(pairs) - 1) * difference.std(ddof=1))
        half /= math.sqrt(len(pairs))
        result["difference_t95"] = [result["difference"] - half, result["difference"] + half]
    return result


def summarize_long(verdicts: list[LongVerdict], chunk: int) -> dict:
    """Pool long-video verdicts into a JSON-ready summary: share right with its Wilson 95 %
    interval, share per failure (LONG_FAILURES, the first rule broken) and per reason
    (LONG_REASONS, every rule broken: a video counts under each of its reasons), mean identity,
    seam statistics (border against inside step error) and the drift series per frame index (nan
    as None)."""
    if not verdicts:
        raise ValueError("summarize_long needs at least one verdict")
    right = sum(v.failure is None for v in verdicts)
    low, high = wilson_interval(right, len(verdicts))
    return {
        "videos": len(verdicts),
        "chunk": chunk,
        "frames": max(v.frames for v in verdicts),
        "right": right / len(verdicts),
        "right_wilson95": [low, high],
        "failures": {
            k: sum(v.failure == k for v in verdicts) / len(verdicts) for k in LONG_FAILURES
        },
        "reasons": {k: sum(k in v.reasons for v in verdicts) / len(verdicts) for k in LONG_REASONS},
        "identity": float(np.mean([v.identity for v in verdicts])),
        "seam": _seam_statistics(verdicts),
        "drift": _drift_series(verdicts),
    }


# The drift plot: one panel per series, stacked; what each shows and its y range's floor.
PANELS = (
    ("radius", "size / first chunks' size", (0.8, 1.2)),
    ("colour_error", "colour error (RGB distance)", (0.0, 40.0)),
    ("speed", "step / video's speed", (0.0, 2.0)),
)
PLOT_WIDTH, PANEL_HEIGHT, MARGIN = 640, 130, 44


def _panel(
    draw: ImageDraw.ImageDraw, top: int, values: list, label: str, floor: tuple, chunk: int
) -> None:
    """One line panel at ``top``: chunk borders in light grey, the series in blue."""
    finite = [v for v in values if v is not None]
    low = min([floor[0], *finite]) if finite else floor[0]
    high = max([floor[1], *finite]) if finite else floor[1]
    left, right = MARGIN, PLOT_WIDTH - 10
    bottom = top + PANEL_HEIGHT - 24
    frames = max(len(values) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + (right - left) * i / frames, bottom - (bottom - top - 16) * (v - low) / (
            high - low or 1.0
        )

    for border in range(chunk, len(values), chunk):
        x = xy(border, low)[0] - 0.5 * (right - left) / frames
        draw.line([(x, top + 16), (x, bottom)], fill=(232, 232, 232))
    draw.rectangle([left, top + 16, right, bottom], outline=(120, 120, 120))
    draw.text((left, top + 2), label, fill=(0, 0, 0))
    draw.text((4, top + 12), f"{high:.2f}", fill=(80, 80, 80))
    draw.text((4, bottom - 10), f"{low:.2f}", fill=(80, 80, 80))
    draw.text((left, bottom + 4), "0", fill=(80, 80, 80))
    draw.text((right - 24, bottom + 4), f"{len(values) - 1}", fill=(80, 80, 80))
    points = [xy(i, v) if v is not None else None for i, v in enumerate(values)]
    for a, b in zip(points[:-1], points[1:], strict=True):
        if a is not None and b is not None:
            draw.line([a, b], fill=(30, 80, 200), width=1)


def plot_drift(summary: dict, path: str | Path) -> None:
    """Draw the drift series of :func:`summarize_long` (or its ``drift`` dict, chunk 4 then
    assumed unless it carries ``chunk``) as a PNG: size, colour error and speed against frame
    index, chunk borders marked lightly."""
    series = summary.get("drift", summary)
    chunk = int(summary.get("chunk", 4))
    image = Image.new("RGB", (PLOT_WIDTH, PANEL_HEIGHT * len(PANELS) + 16), "white")
    draw = ImageDraw.Draw(image)
    for k, (key, label, floor) in enumerate(PANELS):
        _panel(draw, k * PANEL_HEIGHT, list(series[key]), label, floor, chunk)
    draw.text((MARGIN, PANEL_HEIGHT * len(PANELS)), "frame index", fill=(0, 0, 0))
    image.save(path)
