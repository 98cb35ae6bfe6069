"""Frames a user gives to generation: images at frame indices, or the end of a clip to continue.

This is the host side of image-to-video, extension and interpolation: user arrays (any size) are
fitted to the model's frame size the way ``univid prepare`` fits training clips (scale to cover,
centre crop), indices are checked, and :func:`to_given` turns them into the
:class:`univid.flow.Given` the sampler keeps fixed (one latent frame per given time).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from univid.autoencoder import Autoencoder
from univid.data.decode import ClipSpec, fit
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
        if not isinstance(index, (int, np.integer)) or not -frames <= index < frames:
            raise InputError(
                f"frame index {index!r} is out of range: the video has {frames} frames "
                f"(0..{frames - 1}, or -{frames}..-1 from the end)"
            )
        given[int(index) % frames] = fit_frame(image, height, width, f"the image for frame {index}")
    if video is None:
        if keep is not None:
            raise InputError("keep needs a video to continue")
        return given
    clip = np.asarray(video)
    if clip.ndim != 4:
        raise InputError(f"the video must be (T, H, W, 3) frames, got shape {clip.shape}")
    keep = frames // 2 if keep is None else keep
    if not 1 <= keep < frames:
        raise InputError(f"keep must be 1..{frames - 1} (frames to continue), got {keep}")
    if len(clip) < keep:
        raise InputError(f"the video is too short: it has {len(clip)} frames, keep is {keep}")
    for i, frame in enumerate(clip[len(clip) - keep :]):
        if i in given:
            raise InputError(f"frame {i} is given twice (by an image and by the video)")
        given[i] = fit_frame(frame, height, width, f"frame {i} of the video")
    return given


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
