"""Writing videos: .gif, .mp4, .png (frame grid) or .npy, chosen by the file extension."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from univid.errors import InputError
from univid.files import atomic_write, writing
from univid.limits import MAX_FRAME_SIDE

if TYPE_CHECKING:  # torch only for the model's tensors: writing a stream of frames needs none
    import torch

FORMATS = (".gif", ".mp4", ".png", ".npy")
# H.264 at near-lossless quality: the tiny flat-coloured frames of the shapes world stay exact
# enough to judge after a round trip through the file.
H264_OPTIONS = {"crf": "12"}


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model-space video (B, C, T, H, W) in [-1, 1] (a torch tensor) -> uint8 (B, T, H, W, 3)."""
    import torch

    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).cpu().numpy()


def check_output_path(path: str | Path) -> Path:
    """Fail early, with one line, when ``path`` has an unknown extension or cannot be written."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"output {path} must end in one of {', '.join(FORMATS)}")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    existed = path.exists()
    try:
        # Probe by opening for append: catches directories, permissions and read-only mounts.
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror.lower()}") from None
    if not existed:
        path.unlink()
    return path


def upscale(video: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of (..., H, W, 3) frames, so tiny videos can be seen."""
    if factor == 1:
        return video
    if max(video.shape[-3:-1]) * factor > MAX_FRAME_SIDE:
        raise InputError(
            f"frames of {video.shape[-3]}x{video.shape[-2]} scaled {factor}x exceed "
            f"{MAX_FRAME_SIDE} pixels a side"
        )
    return video.repeat(factor, axis=-3).repeat(factor, axis=-2)


def frame_grid(videos: np.ndarray) -> np.ndarray:
    """(N, T, H, W, 3) -> one image (N*H, T*W, 3): a row per video, a column per frame."""
    N, T, H, W, C = videos.shape
    return videos.transpose(0, 2, 1, 3, 4).reshape(N * H, T * W, C)


def tile(videos: np.ndarray) -> np.ndarray:
    """(N, T, H, W, 3) -> one video (T, H, N*W, 3) with the N videos side by side."""
    N, T, H, W, C = videos.shape
    return videos.transpose(1, 2, 0, 3, 4).reshape(T, H, N * W, C)


def save_video(video: np.ndarray, path: str | Path, fps: int = 8, scale: int = 1) -> Path:
    """Write uint8 video (T, H, W, 3) to ``path``; the extension picks the format.

    Written under a temporary name and renamed: a failure (a full disk is one line) leaves no
    empty or partial file behind, and an older file at ``path`` stays whole until replaced."""
    path = check_output_path(path)
    suffix = path.suffix.lower()
    if suffix != ".npy":
        video = upscale(video, scale)
    with writing(path):
        atomic_write(path, lambda tmp: _write(video, tmp, suffix, fps))
    return path


def _write(video: np.ndarray, path: Path, suffix: str, fps: int) -> None:
    """Write ``video`` to ``path`` in the format of ``suffix`` (``path`` may be named anyhow)."""
    if suffix == ".npy":
        with open(path, "wb") as f:
            np.save(f, video)
    elif suffix == ".png":
        from PIL import Image

        Image.fromarray(frame_grid(video[None])).save(path, format="PNG")
    elif suffix == ".gif":
        from PIL import Image

        frames = [Image.fromarray(f) for f in video]
        frames[0].save(
            path,
            format="GIF",
            save_all=True,
            append_images=frames[1:],
            duration=round(1000 / fps),
            loop=0,
        )
    else:
        _write_mp4(video, path, fps)


def _write_mp4(video: np.ndarray, path: Path, fps: int) -> None:
    import av

    video = even_size(video)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = h264_stream(container, fps, video.shape[-2], video.shape[-3], H264_OPTIONS)
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def even_size(video: np.ndarray) -> np.ndarray:
    """Pad (..., H, W, 3) frames with black to even sides: yuv420p needs them, and padding
    beats failing on an odd size."""
    H, W = video.shape[-3:-1]
    return np.pad(video, [(0, 0)] * (video.ndim - 3) + [(0, H % 2), (0, W % 2), (0, 0)])


def h264_stream(container: Any, fps: int, width: int, height: int, options: dict[str, str]) -> Any:
    """Add a libx264 yuv420p video stream of ``width`` x ``height`` to an open PyAV container."""
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.options = options
    return stream
