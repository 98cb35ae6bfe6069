"""Autoencoders: the space a model trains in.

Built in (:data:`BUILTIN`): ``'pixel'`` (the default: the bundled model trains on pixels) is the
identity with a fixed scale; ``'taef2'`` is the bundled pretrained TAEF2 tiny autoencoder (32
channels at 1/8 of the height and width, frame by frame; see :mod:`univid.autoencoder.taef2`).
Anything else names a local diffusers VAE folder (config.json with ``_class_name``): the video
VAEs ``AutoencoderKLWan``, ``AutoencoderKLLTXVideo``, ``AutoencoderKLCogVideoX``,
``AutoencoderKLHunyuanVideo`` or the image VAE ``AutoencoderKL`` applied frame by frame. Their
latents are normalised as the diffusers pipelines do; see :mod:`univid.autoencoder.diffusers_vae`.
diffusers is imported only when such a folder is loaded.
"""

from __future__ import annotations

import torch

from univid.autoencoder.base import Autoencoder, PixelAutoencoder
from univid.autoencoder.diffusers_vae import (
    SUPPORTED,
    DiffusersAutoencoder,
    load_diffusers_autoencoder,
)
from univid.autoencoder.taef2 import SPATIAL_RATIO as TAEF2_SPATIAL_RATIO
from univid.autoencoder.taef2 import TAEF2Autoencoder, load_taef2
from univid.config.sections import BUILTIN_AUTOENCODERS as BUILTIN

DEFAULT_AUTOENCODER = BUILTIN[0]
# (temporal, spatial) compression of each built-in autoencoder, known before one is loaded.
BUILTIN_RATIOS: dict[str, tuple[int, int]] = {"pixel": (1, 1), "taef2": (1, TAEF2_SPATIAL_RATIO)}


def load_autoencoder(
    spec: str = DEFAULT_AUTOENCODER,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    tiling: bool = False,
) -> Autoencoder:
    """A built-in autoencoder by name or a local diffusers VAE folder, frozen, on ``device``
    with weights in ``dtype`` (encode/decode still return float32). ``tiling`` turns on the
    VAE's tiled encoding/decoding for large videos (ignored for pixels and TAEF2, which work
    frame by frame)."""
    spec = str(spec)
    if spec == "pixel":
        return PixelAutoencoder(scale=1.0)
    if spec == "taef2":
        return load_taef2(device=device, dtype=dtype)
    return load_diffusers_autoencoder(spec, device=device, dtype=dtype, tiling=tiling)


__all__ = [
    "BUILTIN",
    "BUILTIN_RATIOS",
    "DEFAULT_AUTOENCODER",
    "Autoencoder",
    "DiffusersAutoencoder",
    "PixelAutoencoder",
    "SUPPORTED",
    "TAEF2Autoencoder",
    "load_autoencoder",
]
