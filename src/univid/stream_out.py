"""Writing a video while it is made: frames go into the file one by one as a generator yields them.

An .mp4 is written as fragmented MP4 with a fragment per frame, flushed to the OS at once: the
file at the output path grows as the video is made and can be watched while it grows, and
whatever stops the writing (Ctrl-C, SIGTERM, even SIGKILL) leaves a playable file. A frame's
fragment is written when the next frame comes (the muxer takes a frame's duration from the
next one's time), so a SIGKILL loses at most the newest frame. Ctrl-C and SIGTERM (under
:func:`terminate_as_interrupt`) also end the encoder and close the file properly before they
propagate, as :class:`StreamStopped`.

Other formats (.gif, .npy, .png) cannot grow a frame at a time: their frames are collected in
memory and written once, when the stream ends or is stopped (the same way as on an interrupt).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from univid.files import signals_held, writing
from univid.video import (
    H264_OPTIONS,
    check_output_path,
    even_size,
    h264_stream,
    save_video,
    upscale,
)

# A keyframe every 8 frames (one a second at 8 fps): a player can seek in the growing file.
KEYFRAME_EVERY = 8
# zerolatency: no B-frames and no lookahead, so each frame comes out of the encoder as it goes in.
STREAM_H264_OPTIONS = {**H264_OPTIONS, "tune": "zerolatency", "g": str(KEYFRAME_EVERY)}
# A moof+mdat fragment per frame after an empty moov, each flushed out of the muxer's buffer
# at once: a file cut anywhere (a kill, a full disk) plays up to its last whole fragment.
FRAGMENTED_MP4 = {
    "movflags": "frag_every_frame+empty_moov+default_base_moof",
    "flush_packets": "1",
}


class StreamStopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a stream; the file at ``path`` holds the ``frames`` written
    (none: the file was not touched). ``str()`` is the line for the user."""

    def __init__(self, frames: int, total: int | None, path: Path) -> None:
        self.frames, self.total, self.path = frames, total, path
        if frames == 0:
            message = f"stopped before the first frame; {path} not written"
        else:
            of = "" if total is None else f" of {total}"
            message = f"stopped at frame {frames}{of}; {path} holds {frames} frames"
        super().__init__(message)


def write_stream(
    frames: Iterable[np.ndarray],
    path: str | Path,
    fps: int = 8,
    scale: int = 1,
    total: int | None = None,
    progress: bool = False,
) -> int:
    """Write uint8 (H, W, 3) ``frames`` to ``path`` as they come; return how many were written.

    An .mp4 grows a frame at a time (see the module's docstring); other formats are written
    when the stream ends. ``scale`` enlarges frames (nearest neighbour; not for .npy), ``total``
    sizes the progress bar (in frames). The file is opened at the first frame: a stream that
    fails or is stopped before it leaves an older file at ``path`` as it was.

    Ctrl-C (or SIGTERM under :func:`terminate_as_interrupt`) ends the file properly and raises
    :class:`StreamStopped` (a ``KeyboardInterrupt``) saying how many frames the file holds; any
    other error also ends the file (its frames stay) before it propagates."""
    path = check_output_path(path)
    mp4 = path.suffix.lower() == ".mp4"
    sink = _Mp4Sink(path, fps, scale) if mp4 else _Collector(path, fps, scale)
    bar = tqdm(total=total, desc="frames", unit="frame", disable=not progress)
    try:
        with writing(path):
            try:
                for frame in frames:
                    with signals_held():  # a frame is in the file whole, or not at all
                        sink.add(frame)
                    bar.update()
            finally:
                bar.close()
                with signals_held():
                    sink.close()
    except KeyboardInterrupt as exc:
        raise StreamStopped(sink.count, total, path) from exc
    return sink.count


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (a scheduler's or ``kill``'s polite stop) raises
    KeyboardInterrupt as Ctrl-C does, so it ends a stream just as cleanly; the handler there
    before is restored after. Main thread only (signals are handled there); elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _checked(frame: Any, shape: tuple[int, ...] | None) -> np.ndarray:
    """``frame`` if it is a uint8 (H, W, 3) array of the stream's ``shape`` (None: the first)."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3:
        raise ValueError(f"a streamed frame must be a uint8 (H, W, 3) array, not {frame!r:.80}")
    if frame.shape[-1] != 3 or (shape is not None and frame.shape != shape):
        raise ValueError(f"streamed frame of shape {frame.shape}, expected {shape or '(H, W, 3)'}")
    return frame


class _Mp4Sink:
    """Frames into a fragmented .mp4 at ``path``, each in the file as soon as it is added."""

    def __init__(self, path: Path, fps: int, scale: int) -> None:
        self.path, self.fps, self.scale = path, fps, scale
        self.count = 0
        self.shape: tuple[int, ...] | None = None
        self.container: Any = None

    def add(self, frame: np.ndarray) -> None:
        import av

        self.shape = _checked(frame, self.shape).shape
        frame = even_size(upscale(frame, self.scale))
        if self.container is None:  # opened at the first frame, which gives the size
            self.container = av.open(str(self.path), mode="w", format="mp4", options=FRAGMENTED_MP4)
            H, W = frame.shape[:2]
            self.stream = h264_stream(self.container, self.fps, W, H, STREAM_H264_OPTIONS)
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        picture.pts = self.count
        for packet in self.stream.encode(picture):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self.container is None:
            return
        try:
            for packet in self.stream.encode():  # flush the encoder (nothing waits: zerolatency)
                self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None


class _Collector:
    """Frames for a format that cannot grow a frame at a time, written once at :meth:`close`."""

    def __init__(self, path: Path, fps: int, scale: int) -> None:
        self.path, self.fps, self.scale = path, fps, scale
        self.frames: list[np.ndarray] = []

    @property
    def count(self) -> int:
        return len(self.frames)

    def add(self, frame: np.ndarray) -> None:
        self.frames.append(_checked(frame, self.frames[0].shape if self.frames else None).copy())

    def close(self) -> None:
        if self.frames:
            save_video(np.stack(self.frames), self.path, self.fps, self.scale)
