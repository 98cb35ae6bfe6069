"""Frames a user gives to generation: images at frame indices, or the end of a clip to continue.

This is the host side of image-to-video, extension and interpolation: user arrays (any size) are
fitted to the model's frame size the way ``univid prepare`` fits training clips (scale to cover,
centre crop), indices are checked, and :func:`to_given` turns them into the
:class:`univid.flow.Given` the sampler keeps fixed (one latent frame per given time).
:func:`read_given` reads them from files (what ``univid generate --image/--video`` calls).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from univid.autoencoder import Autoencoder
from univid.data import BadSample
from univid.data.decode import ClipSpec, fit, read_clip, read_image
from univid.errors import InputError
from univid.flow import Given


def fit_frame(image: np.ndarray, height: int, width: int, what: str) -> np.ndarray:
    """A uint8 (h, w, 3) (or grey (h, w)) image fitted to (height, width, 3) as prepare does."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise InputError(f"{what} must be an (H, W, 3) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"{what} must be uint8 (0..255), got {image.dtype}")
    spec = ClipSpec(frames=1, height=height, width=width, fps=1.0)
    return fit(np.ascontiguousarray(image[..., :3]), spec)


def frames_from(
    frames: int,
    height: int,
    width: int,
    images: Mapping[int, np.ndarray] | None = None,
    video: np.ndarray | None = None,
    keep: int | None = None,
) -> dict[int, np.ndarray]:
    """The given frames of one video of ``frames`` frames: index -> uint8 (height, width, 3).

    ``images`` maps frame indices (negative ones count from the end, as in Python) to images;
    ``video`` (T, h, w, 3) is continued: its last ``keep`` frames (default: half of ``frames``)
    become the first ``keep`` frames of the result.
    """
    given: dict[int, np.ndarray] = {}
    for index, image in (images or {}).items():
        i = frame_index(index, frames)
        if i in given:
            raise InputError(f"frame {i} is given twice (index {index} names it again)")
        given[i] = fit_frame(image, height, width, f"the image for frame {index}")
    keep = check_keep(frames, keep, video is not None)
    if video is None:
        return given
    clip = np.asarray(video)
    if clip.ndim != 4:
        raise InputError(f"the video must be (T, H, W, 3) frames, got shape {clip.shape}")
    if len(clip) < keep:
        raise InputError(f"the video is too short: it has {len(clip)} frames, keep is {keep}")
    for i, frame in enumerate(clip[len(clip) - keep :]):
        if i in given:
            raise InputError(f"frame {i} is given twice (by an image and by the video)")
        given[i] = fit_frame(frame, height, width, f"frame {i} of the video")
    return given


def frame_index(index: object, frames: int) -> int:
    """``index`` (negative counts from the end) as 0..frames-1, or InputError."""
    if not isinstance(index, (int, np.integer)) or not -frames <= index < frames:
        raise InputError(
            f"frame index {index!r} is out of range: the video has {frames} frames "
            f"(0..{frames - 1}, or -{frames}..-1 from the end)"
        )
    return int(index) % frames


def check_keep(frames: int, keep: int | None, video: bool) -> int | None:
    """The number of a video's last frames to continue (default half of ``frames``); None
    without a video (where ``keep`` must be None too)."""
    if not video:
        if keep is not None:
            raise InputError("keep needs a video to continue")
        return None
    keep = frames // 2 if keep is None else keep
    if not 1 <= keep < frames:
        raise InputError(f"keep must be 1..{frames - 1} (frames to continue), got {keep}")
    return keep


def read_given(
    frames: int,
    height: int,
    width: int,
    fps: float,
    images: Sequence[tuple[int, str | Path]] = (),
    video: str | Path | None = None,
    keep: int | None = None,
) -> dict[str, Any]:
    """Read the files of a generation's given frames: the keyword arguments ``images``,
    ``video`` and ``keep`` of :meth:`univid.pipeline.Pipeline.__call__`.

    ``images`` pairs frame indices with PNG, JPEG or WebP files (read at their own size);
    ``video``'s last ``keep`` frames at ``fps`` (default half of ``frames``) are read fitted to
    (height, width). Every unusable file, repeated index or bad ``keep`` is an InputError.
    """
    read: dict[int, np.ndarray] = {}
    paths: dict[int, str | Path] = {}
    for index, path in images:
        i = frame_index(index, frames)
        if i in paths:
            raise InputError(f"frame {i} is given twice ({paths[i]} and {path})")
        try:
            read[index] = read_image(path)
        except BadSample as exc:
            raise InputError(f"image {path}: {exc}") from None
        paths[i] = path
    keep = check_keep(frames, keep, video is not None)
    if video is None:
        return {"images": read, "video": None, "keep": None}
    assert keep is not None
    spec = ClipSpec(frames=keep, height=height, width=width, fps=float(fps))
    try:
        clip = read_clip(video, spec, end=True)
    except BadSample as exc:
        raise InputError(f"video {video}: {exc}") from None
    if len(clip) < keep:  # an image given as the video
        raise InputError(f"video {video} is one image: it cannot give {keep} frames")
    return {"images": read, "video": clip, "keep": keep}


def to_given(
    batch: list[dict[int, np.ndarray]],
    autoencoder: Autoencoder,
    frames: int,
    time_frames: int,
    device: torch.device,
) -> Given | None:
    """The :class:`Given` of a batch (one dict of given frames per video), or None if no video
    has any. Each latent time frame covers ``frames // time_frames`` video frames, and a given
    image must cover whole ones: the autoencoder must keep every frame (no temporal
    compression) and the model's temporal patch must be 1, or the images must fill its groups.
    """
    if not any(batch):
        return None
    height, width = next(iter(next(g for g in batch if g).values())).shape[:2]
    latent_frames = autoencoder.latent_shape(frames, height, width)[0]
    if latent_frames != frames:
        raise InputError(
            f"autoencoder '{autoencoder.spec}' merges frames in time ({frames} frames -> "
            f"{latent_frames} latent frames): a single frame cannot be given"
        )
    group = frames // time_frames
    pixels = np.zeros((len(batch), frames, height, width, 3), np.uint8)
    mask = torch.zeros(len(batch), time_frames, dtype=torch.bool)
    for b, given in enumerate(batch):
        for index, image in given.items():
            pixels[b, index] = image
        for g in range(time_frames):
            inside = [i in given for i in range(g * group, (g + 1) * group)]
            if any(inside) and not all(inside):
                raise InputError(
                    f"frames {g * group}..{(g + 1) * group - 1} share one time in this model "
                    f"(temporal patch {group}): give all of them or none"
                )
            mask[b, g] = all(inside)
    x = torch.from_numpy(pixels).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    latents = autoencoder.encode(x.to(device))
    return Given(latents, mask.to(device))
