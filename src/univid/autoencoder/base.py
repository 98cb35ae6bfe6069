"""The autoencoder interface (video <-> normalised latents) and the pixel-space identity.

Shapes follow the video convention of the project: videos are ``(B, 3, T, H, W)`` floats in
``[-1, 1]``, latents ``(B, C, T', H', W')``. A causal video VAE keeps the first frame on its own,
so ``T' = 1 + (T - 1) // temporal_ratio``; an image VAE or the pixel space has ``temporal_ratio``
1 and ``T' = T``.
"""

from __future__ import annotations

from typing import Any

import torch

from univid.errors import InputError


def _nearest(value: int, step: int, offset: int) -> tuple[int, int]:
    """The valid values ``offset + k * step`` (k >= 0, value >= offset) just below and above."""
    k = max((value - offset) // step, 0)
    low = offset + k * step
    return (low, low + step) if low != value else (low - step, low + step)


class Autoencoder:
    """Base class: encode videos to normalised latents and decode them back.

    Subclasses set ``spec``, ``channels``, ``temporal_ratio``, ``spatial_ratio`` and
    ``frame_step`` (valid frame counts are ``1 + k * frame_step``; a multiple of
    ``temporal_ratio``, larger when the VAE needs more, as CogVideoX does) and implement
    :meth:`_encode` and :meth:`_decode`. The public methods check shapes, so a VAE never silently
    drops frames or pixels, and return float32.
    """

    spec: str
    channels: int
    temporal_ratio: int = 1
    spatial_ratio: int = 1
    frame_step: int = 1
    tiling: bool = False

    # -- shapes ------------------------------------------------------------------------------

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """``(T', H', W')`` of the latents of a ``frames x height x width`` video."""
        return (
            1 + (frames - 1) // self.temporal_ratio,
            height // self.spatial_ratio,
            width // self.spatial_ratio,
        )

    def video_frames(self, latent_frames: int) -> int:
        """Frames a decode of ``latent_frames`` latent frames gives back."""
        return 1 + (latent_frames - 1) * self.temporal_ratio

    def check_shape(self, frames: int, height: int, width: int) -> None:
        """Raise :class:`InputError` (one line, with valid alternatives) unless the autoencoder
        takes a ``frames x height x width`` video exactly, with nothing dropped or padded."""
        problems = []
        if frames < 1 or (frames - 1) % self.frame_step:
            low, high = _nearest(frames, self.frame_step, 1)
            options = f"{low} or {high}" if low >= 1 else f"{high}"
            problems.append(
                f"frames must be 1 + k*{self.frame_step} (e.g. {options}), got {frames}"
            )
        for name, size in (("height", height), ("width", width)):
            if size < 1 or size % self.spatial_ratio:
                low, high = _nearest(size, self.spatial_ratio, 0)
                options = f"{low} or {high}" if low >= 1 else f"{high}"
                ratio = self.spatial_ratio
                problems.append(
                    f"{name} must be a multiple of {ratio} (e.g. {options}), got {size}"
                )
        if problems:
            raise InputError(
                f"autoencoder '{self.spec}' cannot take a {frames}x{height}x{width} "
                f"(frames x height x width) video: {'; '.join(problems)}"
            )

    # -- encode / decode -----------------------------------------------------------------------

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` in ``[-1, 1]`` -> normalised latents ``(B, C, T', H', W')`` float32
        (the posterior mode: deterministic)."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise InputError(
                f"autoencoder '{self.spec}' encodes (B, 3, T, H, W) videos, "
                f"got shape {tuple(video.shape)}"
            )
        batch, _, frames, height, width = video.shape
        self.check_shape(frames, height, width)
        with torch.no_grad():
            latents = self._encode(video)
        expected = (batch, self.channels, *self.latent_shape(frames, height, width))
        if tuple(latents.shape) != expected:
            raise InputError(
                f"autoencoder '{self.spec}' gave latents of shape {tuple(latents.shape)} for a "
                f"video of shape {tuple(video.shape)}, expected {expected}: "
                + self._mismatch_hint()
            )
        return latents.float().contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``(B, C, T', H', W')`` -> ``(B, 3, T, H, W)`` float32 in
        ``[-1, 1]``."""
        if latents.ndim != 5 or latents.shape[1] != self.channels:
            raise InputError(
                f"autoencoder '{self.spec}' decodes (B, {self.channels}, T, H, W) latents, "
                f"got shape {tuple(latents.shape)}"
            )
        batch, _, frames, height, width = latents.shape
        latent_step = self.frame_step // self.temporal_ratio
        if frames < 1 or (frames - 1) % latent_step:
            low, high = _nearest(frames, latent_step, 1)
            options = f"{low} or {high}" if low >= 1 else f"{high}"
            raise InputError(
                f"autoencoder '{self.spec}' decodes 1 + k*{latent_step} latent frames "
                f"(e.g. {options}), got {frames}"
            )
        with torch.no_grad():
            video = self._decode(latents)
        expected = (
            batch,
            3,
            self.video_frames(frames),
            height * self.spatial_ratio,
            width * self.spatial_ratio,
        )
        if tuple(video.shape) != expected:
            raise InputError(
                f"autoencoder '{self.spec}' decoded latents of shape {tuple(latents.shape)} to "
                f"{tuple(video.shape)}, expected {expected}: " + self._mismatch_hint()
            )
        return video.float().clamp(-1.0, 1.0).contiguous()

    def _mismatch_hint(self) -> str:
        if self.tiling:
            return "its tile settings do not fit this size (turn tiling off or change the tiles)"
        return "its configuration does not describe its compression (channels or ratios)"

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- options / description -----------------------------------------------------------------

    def set_tiling(self, on: bool, **options: Any) -> None:
        """Tiled encoding/decoding of large videos; a no-op where there is nothing to tile."""
        self.tiling = bool(on)

    def normalisation(self) -> dict[str, Any]:
        """How raw latents are normalised (JSON-able)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: class, spec, channels, ratios and the normalisation used."""
        return {
            "class": type(self).__name__,
            "spec": self.spec,
            "channels": self.channels,
            "temporal_ratio": self.temporal_ratio,
            "spatial_ratio": self.spatial_ratio,
            "frame_step": self.frame_step,
            "tiling": self.tiling,
            "normalisation": self.normalisation(),
        }


class PixelAutoencoder(Autoencoder):
    """The pixel space itself: ``latents = video * scale``, 3 channels, no compression."""

    def __init__(self, scale: float = 1.0, spec: str = "pixel") -> None:
        if not scale or scale != scale or abs(scale) == float("inf"):
            raise InputError(
                f"pixel autoencoder scale must be a finite non-zero number, got {scale}"
            )
        self.spec = spec
        self.scale = float(scale)
        self.channels = 3
        self.temporal_ratio = 1
        self.spatial_ratio = 1
        self.frame_step = 1

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        return video.float() * self.scale

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.float() / self.scale

    def normalisation(self) -> dict[str, Any]:
        return {"formula": "video * scale", "scale": self.scale}
