"""Writing videos: .gif, .mp4, .png (frame grid) or .npy, chosen by the file extension."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from univid.errors import InputError
from univid.files import atomic_write, writing
from univid.limits import MAX_FRAME_SIDE

FORMATS = (".gif", ".mp4", ".png", ".npy")


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model-space video (B, C, T, H, W) in [-1, 1] (a torch tensor) -> uint8 (B, T, H, W, 3)."""
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

    # yuv420p needs even sizes; pad with black rather than fail.
    T, H, W, _ = video.shape
    video = np.pad(video, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12"}
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
