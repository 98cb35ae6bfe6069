"""Decoding real media into fixed-size clips: videos through PyAV, images through Pillow.

:func:`read_clip` takes ``spec.frames`` frames of a video, either resampled to ``spec.fps`` (output
frame ``k`` is the last decoded frame shown at or before ``start + k / spec.fps``) or every
``spec.stride``-th decoded frame, and fits them to ``spec.height`` x ``spec.width`` by scaling to
cover and cropping (``resize='crop'``) or scaling to fit and padding with black (``'pad'``).

Every failure, from a missing file to a frame that does not decode, raises
:class:`~univid.data.BadSample` with a short reason that does not repeat the path.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from univid.data import BadSample
from univid.data.sources import is_image

DEFAULT_MAX_PIXELS = 8192 * 8192
RESIZE_MODES = ("crop", "pad")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # what Pillow may parse (by content, not by name)
MAX_FPS = 1000.0  # a higher "frame rate" is a broken header, not a video
SEEK_AFTER = 4.0  # seconds: a clip starting later is reached by seeking to the keyframe before it


@dataclass(frozen=True)
class ClipSpec:
    """What to cut from each video and the size to fit it to."""

    frames: int  # frames to take (images always give 1)
    height: int
    width: int
    fps: float  # target frame rate: frames are taken at times start + k / fps
    stride: int = 0  # > 0: take every stride-th decoded frame instead (ignores fps)
    resize: str = "crop"  # 'crop': scale to cover, then crop; 'pad': scale to fit, pad with black
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger source frames (width*height) are refused

    def __post_init__(self) -> None:
        if self.frames < 1 or self.height < 1 or self.width < 1:
            raise ValueError(f"clip size must be positive, got {self}")
        if self.stride < 0:
            raise ValueError(f"stride must be >= 0, got {self.stride}")
        if self.stride == 0 and not (0 < self.fps <= MAX_FPS):
            raise ValueError(f"fps must be in (0, {MAX_FPS:g}] when stride is 0, got {self.fps}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")


@dataclass(frozen=True)
class MediaInfo:
    """What the file's headers say about it (no frame is decoded)."""

    kind: str  # 'video' or 'image'
    width: int
    height: int
    fps: float  # 0.0 for images
    frames: int  # frame count (the container's, or estimated from duration * fps); 1 for images
    duration: float  # seconds (0.0 for images)


def _why(exc: BaseException) -> str:
    """A one-line lower-case reason from an exception, without file names."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text[:1].lower() + text[1:]


@contextmanager
def _failures(doing: str) -> Iterator[None]:
    """Turn any error inside into ``BadSample(f"{doing}: reason")``."""
    try:
        yield
    except BadSample:
        raise
    except MemoryError:
        raise BadSample(f"{doing}: out of memory") from None
    except Exception as exc:  # PyAV, Pillow and numpy raise many types for damaged files
        raise BadSample(f"{doing}: {_why(exc)}") from None


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    try:
        if not path.exists():
            raise BadSample("file not found")
        if not path.is_file():
            raise BadSample("not a file")
        if path.stat().st_size == 0:
            raise BadSample("file is empty (0 bytes)")
    except OSError as exc:
        raise BadSample(f"cannot read file: {_why(exc)}") from None
    return path


def _too_large(width: int, height: int, max_pixels: int) -> BadSample:
    return BadSample(
        f"frames of {width}x{height} are too large ({width * height} pixels, "
        f"at most {max_pixels} allowed)"
    )


# --- images -------------------------------------------------------------------------------------


def _read_image(
    path: Path, max_pixels: int, pixels: bool = True
) -> tuple[np.ndarray | None, int, int]:
    """(RGB uint8 (H, W, 3) or None when not ``pixels``, width, height); size checked first."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                width, height = im.size
                if width < 1 or height < 1:
                    raise BadSample("cannot read image: it has no pixels")
                if width * height > max_pixels:
                    raise _too_large(width, height, max_pixels)
                if not pixels:
                    return None, width, height
                im.load()
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float grey
                    grey = np.array(im, dtype=np.float64)
                    peak = 65535.0 if im.mode != "F" else max(float(grey.max()), 1.0)
                    grey = np.clip(grey / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
                    return np.repeat(grey[..., None], 3, axis=2), im.width, im.height
                if im.mode in ("P", "PA", "LA", "La", "RGBa"):
                    im = im.convert("RGBA")
                rgb = np.array(im.convert("RGB"), dtype=np.uint8)
                return rgb, rgb.shape[1], rgb.shape[0]
    except BadSample:
        raise
    except Image.DecompressionBombError:
        raise BadSample(
            "cannot read image: too large (Pillow's decompression-bomb limit)"
        ) from None
    except Image.UnidentifiedImageError:
        raise BadSample("cannot read image: not a PNG, JPEG or WebP file") from None
    except MemoryError:
        raise BadSample("cannot read image: out of memory") from None
    except Exception as exc:  # truncated/corrupt data: OSError, SyntaxError, struct.error, ...
        raise BadSample(f"cannot read image: {_why(exc)}") from None


# --- videos -------------------------------------------------------------------------------------


@dataclass
class _Video:
    container: Any  # av.container.InputContainer
    stream: Any  # av.video.stream.VideoStream
    info: MediaInfo
    exact: bool  # frames is the container's count, not an estimate from the duration
    start: float  # presentation time of the first frame, seconds

    def close(self) -> None:
        self.container.close()


def _rate(stream: Any) -> float | None:
    """The stream's frame rate from its header (average, else the codec's), None if unknown."""
    for get in (lambda: stream.average_rate, lambda: stream.codec_context.framerate):
        try:
            rate = get()
            value = float(rate) if rate is not None else 0.0
        except (ZeroDivisionError, ValueError, TypeError, OverflowError):
            continue
        if math.isfinite(value) and 0.0 < value <= MAX_FPS:
            return value
    return None


def _open_video(path: Path, max_pixels: int) -> _Video:
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except MemoryError:
        raise BadSample("cannot open: out of memory") from None
    except Exception as exc:
        raise BadSample(f"not a readable media file ({_why(exc)})") from None
    try:
        with _failures("cannot read the video header"):
            if not container.streams.video:
                raise BadSample("no video stream (audio only or not a video)")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width < 1 or height < 1:
                raise BadSample("video stream has no frame size")
            if width * height > max_pixels:
                raise _too_large(width, height, max_pixels)
            fps = _rate(stream)
            if fps is None:
                raise BadSample("unknown frame rate (0 or missing in the file)")
            tb = stream.time_base
            duration = 0.0
            if stream.duration and tb:
                duration = float(stream.duration * tb)
            elif container.duration:
                duration = container.duration / av.time_base
            exact = stream.frames > 0
            frames = stream.frames if exact else int(round(duration * fps))
            if frames < 1:
                raise BadSample("unknown length (no frame count or duration in the file)")
            if duration <= 0:
                duration = frames / fps
            start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
            info = MediaInfo("video", width, height, fps, frames, duration)
            return _Video(container, stream, info, exact, start)
    except BaseException:
        container.close()
        raise


def probe(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> MediaInfo:
    """Size, frame rate and length of a video or image from its headers; raises BadSample."""
    path = _check_file(path)
    if is_image(path):
        _, width, height = _read_image(path, max_pixels, pixels=False)
        return MediaInfo("image", width, height, 0.0, 1, 0.0)
    video = _open_video(path, max_pixels)
    video.close()
    return video.info


def verify(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> MediaInfo:
    """Decode every frame (or load every pixel) once; returns :func:`probe`'s info with the
    number of frames that really decoded. Raises BadSample for a frame that fails to decode or a
    video that ends well before its header says (a truncated file)."""
    path = _check_file(path)
    if is_image(path):
        _, width, height = _read_image(path, max_pixels)
        return MediaInfo("image", width, height, 0.0, 1, 0.0)
    video = _open_video(path, max_pixels)
    count = 0
    try:
        with _failures("decoding failed"):
            try:
                for _ in video.container.decode(video.stream):
                    count += 1
            except av.error.FFmpegError as exc:
                raise _broken(count, exc) from None
    finally:
        video.close()
    expected = video.info.frames
    if count < expected - max(2, expected // 50):
        raise BadSample(f"video ends early: {count} of {expected} frames decoded (truncated file?)")
    return replace(video.info, frames=count)


def _broken(count: int, exc: BaseException) -> BadSample:
    return BadSample(
        f"decoding failed after {count} frames ({_why(exc)}); truncated or corrupt file?"
    )


def _too_short(info: MediaInfo, spec: ClipSpec, need: int) -> BadSample:
    s = "" if info.frames == 1 else "s"
    how = f"every {spec.stride}th frame" if spec.stride else f"at {spec.fps:g} fps"
    return BadSample(
        f"too short: the video has {info.frames} frame{s} ({info.duration:.2f} s at "
        f"{info.fps:g} fps), the clip needs {need} ({spec.frames} frames {how})"
    )


class _Overshoot(Exception):
    """A seek landed after the first wanted frame; decode from the beginning instead."""


def _by_time(
    frames: Iterator[Any],
    wanted: list[float],
    fps: float,
    eps: float,
    emit: Callable[[Any], np.ndarray],
    seeked: bool,
) -> list[np.ndarray]:
    """For each wanted time the last frame shown at or before it (within ``eps``)."""
    out: list[np.ndarray] = []
    prev: Any = None
    prev_time = 0.0
    cache: tuple[Any, np.ndarray] | None = None

    def take(frame: Any) -> np.ndarray:
        nonlocal cache
        if cache is None or cache[0] is not frame:
            cache = (frame, emit(frame))
        return cache[1]

    n, i, count = len(wanted), 0, 0
    try:
        for frame in frames:
            time = frame.time if frame.time is not None else prev_time + (1 / fps) * (count > 0)
            if seeked and count == 0 and time > wanted[0] + eps:
                raise _Overshoot
            count += 1
            while i < n and wanted[i] + eps < time:
                out.append(take(prev if prev is not None else frame))
                i += 1
            prev, prev_time = frame, time
            if i < n and time + 0.5 / fps > wanted[-1] + eps:  # no later frame can be wanted
                while i < n:
                    out.append(take(frame))
                    i += 1
            if i == n:
                return out
    except av.error.FFmpegError as exc:
        raise _broken(count, exc) from None
    if prev is None:
        raise BadSample("no frame could be decoded")
    end = prev_time + 1 / fps  # the last frame stays on screen for one frame interval
    if wanted[i] > end + eps:
        raise BadSample(
            f"video ends at {end:.2f} s after {count} frames, the clip needs frames up to "
            f"{wanted[-1]:.2f} s (truncated file?)"
        )
    out += [take(prev)] * (n - i)
    return out


def _by_stride(
    frames: Iterator[Any], first: int, spec: ClipSpec, emit: Callable[[Any], np.ndarray]
) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    count = 0
    try:
        for index, frame in enumerate(frames):
            count = index + 1
            if index >= first and (index - first) % spec.stride == 0:
                out.append(emit(frame))
                if len(out) == spec.frames:
                    return out
    except av.error.FFmpegError as exc:
        raise _broken(count, exc) from None
    need = first + (spec.frames - 1) * spec.stride + 1
    raise BadSample(f"video ends after {count} frames, the clip needs {need} (truncated file?)")


def _geometry(
    height: int, width: int, spec: ClipSpec, offset: tuple[float, float] | None
) -> tuple[int, int, int, int]:
    """(scaled height, scaled width, top, left): the crop's offset into the scaled frame for
    'crop', the scaled frame's offset into the black canvas for 'pad'."""
    H, W = spec.height, spec.width
    if spec.resize == "crop":
        scale = max(H / height, W / width)
        nh, nw = max(H, round(height * scale)), max(W, round(width * scale))
        if offset is None:
            return nh, nw, (nh - H) // 2, (nw - W) // 2
        top = min(nh - H, int(offset[0] * (nh - H + 1)))
        left = min(nw - W, int(offset[1] * (nw - W + 1)))
        return nh, nw, top, left
    scale = min(H / height, W / width)
    nh, nw = min(H, max(1, round(height * scale))), min(W, max(1, round(width * scale)))
    return nh, nw, (H - nh) // 2, (W - nw) // 2


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    if not image.flags.writeable:
        image = image.copy()
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return y[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def fit(image: np.ndarray, spec: ClipSpec, offset: tuple[float, float] | None = None) -> np.ndarray:
    """Fit one uint8 (h, w, 3) frame to (spec.height, spec.width, 3) by ``spec.resize``.
    ``offset`` (two numbers in [0, 1)) places a random crop; None centres it."""
    nh, nw, top, left = _geometry(image.shape[0], image.shape[1], spec, offset)
    scaled = _resize(image, nh, nw)
    if spec.resize == "crop":
        return np.ascontiguousarray(scaled[top : top + spec.height, left : left + spec.width])
    out = np.zeros((spec.height, spec.width, 3), np.uint8)
    out[top : top + nh, left : left + nw] = scaled
    return out


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The RGB uint8 (H, W, 3) pixels of a PNG, JPEG or WebP file at its own size (EXIF
    orientation applied); raises BadSample."""
    image, _, _ = _read_image(_check_file(path), max_pixels)
    assert image is not None
    return image


def read_clip(
    path: str | Path, spec: ClipSpec, rng: np.random.Generator | None = None, end: bool = False
) -> np.ndarray:
    """uint8 (T, spec.height, spec.width, 3) with T = spec.frames for a video and 1 for an image.

    ``rng`` None: the clip starts at the first frame and the crop is centred; otherwise the start
    (uniform over the starts that leave room for the whole clip) and the crop offset are drawn
    from it. ``end``: the clip is the video's last one instead (the latest start), crop centred.
    Raises BadSample for anything that makes the file unusable."""
    path = _check_file(path)
    if is_image(path):
        image, _, _ = _read_image(path, spec.max_pixels)
        assert image is not None
        offset = None if rng is None else (float(rng.random()), float(rng.random()))
        with _failures("cannot resize"):
            return fit(image, spec, offset)[None]
    video = _open_video(path, spec.max_pixels)
    try:
        return _read_video(path, video, spec, None if end else rng, end)
    finally:
        video.close()


def _read_video(
    path: Path, video: _Video, spec: ClipSpec, rng: np.random.Generator | None, end: bool
) -> np.ndarray:
    info, fps = video.info, video.info.fps
    frames = info.frames if video.exact else max(1, info.frames - 1)  # room for a bad estimate
    if spec.stride:
        need = (spec.frames - 1) * spec.stride + 1
        if info.frames < need:
            raise _too_short(info, spec, need)
        last_first = frames - need
    else:
        span = (spec.frames - 1) / spec.fps
        need = math.floor(span * fps + 1e-6) + 1  # the frame shown at the last wanted time
        if info.frames < need:
            raise _too_short(info, spec, need)
        last_first = math.floor((frames - 1) - span * fps + 1e-6)
    if end:
        first = max(0, last_first)
    else:
        first = 0 if rng is None else int(rng.integers(0, max(0, last_first) + 1))
    offset = None if rng is None else (float(rng.random()), float(rng.random()))

    def emit(frame: Any) -> np.ndarray:
        if frame.width * frame.height > spec.max_pixels:
            raise _too_large(frame.width, frame.height, spec.max_pixels)
        return fit(frame.to_ndarray(format="rgb24"), spec, offset)

    with _failures("decoding failed"):
        if spec.stride:
            clip = _by_stride(video.container.decode(video.stream), first, spec, emit)
            return np.stack(clip)
        start = video.start + first / fps
        wanted = [start + k / spec.fps for k in range(spec.frames)]
        tb = float(video.stream.time_base or 0)
        eps = max(1e-6, min(tb, 0.25 / fps))
        if first / fps <= SEEK_AFTER or tb <= 0 or video.container.format.name == "gif":
            frames_iter = video.container.decode(video.stream)
            return np.stack(_by_time(frames_iter, wanted, fps, eps, emit, seeked=False))
        try:
            target = int((start - eps) / tb)
            video.container.seek(target, stream=video.stream, backward=True, any_frame=False)
            frames_iter = video.container.decode(video.stream)
            return np.stack(_by_time(frames_iter, wanted, fps, eps, emit, seeked=True))
        except (_Overshoot, av.error.FFmpegError):
            pass
        again = _open_video(path, spec.max_pixels)  # decode from the top with a fresh demuxer
        try:
            frames_iter = again.container.decode(again.stream)
            return np.stack(_by_time(frames_iter, wanted, fps, eps, emit, seeked=False))
        finally:
            again.close()
