"""Many clips per video: decode a video once, find its shot cuts, cut it into windows.

:func:`decode_frames` decodes every frame of a video once (PyAV). It keeps the frames of the
output timeline (the frame shown at each time ``start + k / spec.fps``, or every
``spec.stride``-th decoded frame, exactly as :func:`~univid.data.decode.read_clip` samples them),
fitted to ``spec.height`` x ``spec.width``, and a small grey thumbnail difference for every
decoded frame, from which :func:`find_cuts` finds the shot cuts.

**The cut rule.** Each decoded frame is shrunk to a 64x64 grey thumbnail. ``d[i]`` is the mean
absolute difference of thumbnails ``i - 1`` and ``i`` (grey levels, 0-255). There is a cut
before frame ``i`` (frame ``i`` starts a new shot) when ``d[i] >= CUT_FACTOR * median(d)`` and
``d[i] >= CUT_FLOOR``: a jump many times the video's typical change between frames, and large in
absolute terms (so a still video, whose median is about 0, has no cut from noise). Measured on
real footage: the five cuts of ``bikes.mp4`` are 14-25x its median, its fastest motion 6x;
``carphone`` and Big Buck Bunny (one shot each) peak at 2.4x and 4.5x.

:func:`plan_windows` then cuts each shot on its own: windows of ``length`` output frames start at
the shot's first output frame and every ``stride`` output frames after it, while they fit inside
the shot. A window never spans a cut, and a shot shorter than a window gives none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from univid.data import BadSample
from univid.data.decode import (
    ClipSpec,
    _broken,
    _check_file,
    _failures,
    _open_video,
    _too_large,
    fit,
)

THUMB = 64  # thumbnail side for cut detection (pixels)
CUT_FACTOR = 8.0  # a cut: a thumbnail difference at least this many times the video's median ...
CUT_FLOOR = 12.0  # ... and at least this many grey levels (of 255)


@dataclass
class DecodedVideo:
    """A whole video decoded once: the output timeline and the shot cuts."""

    frames: list[np.ndarray]  # output frame k: uint8 (H, W, 3), fitted to the spec
    source: list[int]  # output frame k shows decoded frame source[k]
    cuts: list[int]  # decoded frame indices that start a new shot (never 0)
    decoded: int  # frames decoded


@dataclass(frozen=True)
class Window:
    """Window ``index`` of a video: output frames ``start`` .. ``start + length - 1``."""

    index: int
    start: int
    length: int


def find_cuts(diffs: np.ndarray | list[float]) -> list[int]:
    """Frame indices ``i`` (1-based into the video: ``diffs[j]`` compares frames j and j + 1)
    where a new shot starts, by the rule in this module's docstring."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        return []
    threshold = max(CUT_FACTOR * float(np.median(d)), CUT_FLOOR)
    return [int(j) + 1 for j in np.flatnonzero(d >= threshold)]


def _thumb(frame: Any) -> np.ndarray:
    return frame.reformat(width=THUMB, height=THUMB, format="gray").to_ndarray().astype(np.int16)


def decode_frames(path: str | Path, spec: ClipSpec) -> DecodedVideo:
    """Decode every frame of the video at ``path`` once; raises BadSample (see module doc)."""
    path = _check_file(path)
    video = _open_video(path, spec.max_pixels)
    try:
        with _failures("decoding failed"):
            return _decode(video, spec)
    finally:
        video.close()


def _decode(video: Any, spec: ClipSpec) -> DecodedVideo:
    frames: list[np.ndarray] = []
    source: list[int] = []
    diffs: list[float] = []
    fitted: tuple[int, np.ndarray] | None = None

    def emit(frame: Any, index: int) -> None:
        nonlocal fitted
        if fitted is None or fitted[0] != index:
            if frame.width * frame.height > spec.max_pixels:
                raise _too_large(frame.width, frame.height, spec.max_pixels)
            fitted = (index, fit(frame.to_ndarray(format="rgb24"), spec))
        frames.append(fitted[1])
        source.append(index)

    src_fps = video.info.fps
    tb = float(video.stream.time_base or 0)
    eps = max(1e-6, min(tb, 0.25 / src_fps)) if tb > 0 else 1e-6
    prev: Any = None
    prev_index, prev_time, prev_thumb = -1, 0.0, None
    count = 0
    iterator: Iterator[Any] = video.container.decode(video.stream)
    try:
        for index, frame in enumerate(iterator):
            count = index + 1
            thumb = _thumb(frame)
            if prev_thumb is not None:
                diffs.append(float(np.abs(thumb - prev_thumb).mean()))
            prev_thumb = thumb
            if spec.stride:
                if index % spec.stride == 0:
                    emit(frame, index)
                continue
            time = frame.time if frame.time is not None else prev_time + (index > 0) / src_fps
            while video.start + len(frames) / spec.fps + eps < time:
                emit(prev if prev is not None else frame, prev_index if prev is not None else index)
            prev, prev_index, prev_time = frame, index, time
    except av.error.FFmpegError as exc:
        raise _broken(count, exc) from None
    if count == 0:
        raise BadSample("no frame could be decoded")
    if not spec.stride:
        end = prev_time + 1 / src_fps  # the last frame stays on screen for one frame interval
        while video.start + len(frames) / spec.fps + eps < end:
            emit(prev, prev_index)
    expected = video.info.frames
    if video.exact and count < expected - max(2, expected // 50):
        raise BadSample(f"video ends early: {count} of {expected} frames decoded (truncated file?)")
    return DecodedVideo(frames, source, find_cuts(diffs), count)


def shot_spans(source: list[int], cuts: list[int]) -> list[tuple[int, int]]:
    """(first, end) output frames of each shot: the output frames between two cuts."""
    edges = sorted(set(cuts))
    spans: list[tuple[int, int]] = []
    first = 0
    for k in range(1, len(source) + 1):
        if k == len(source) or any(source[k - 1] < c <= source[k] for c in edges):
            spans.append((first, k))
            first = k
    return spans


def plan_windows(source: list[int], cuts: list[int], length: int, stride: int) -> list[Window]:
    """Windows of ``length`` output frames, every ``stride`` output frames within each shot,
    starting at the shot's first output frame; none spans a cut (see the module doc)."""
    if length < 1 or stride < 1:
        raise ValueError(f"window length and stride must be >= 1, got {length}, {stride}")
    windows: list[Window] = []
    for first, end in shot_spans(source, cuts):
        for start in range(first, end - length + 1, stride):
            windows.append(Window(len(windows), start, length))
    return windows


def clip_of(video: DecodedVideo, window: Window) -> np.ndarray:
    """uint8 (T, H, W, 3): the frames of ``window``."""
    return np.stack(video.frames[window.start : window.start + window.length])


def shots(video: DecodedVideo) -> int:
    """Shots in the video: its cuts + 1."""
    return len(video.cuts) + 1
