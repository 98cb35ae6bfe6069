"""Autoencoders: the space a model trains in.

``'pixel'`` (the default: the bundled model trains on pixels) is the identity with a fixed scale.
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

DEFAULT_AUTOENCODER = "pixel"


def load_autoencoder(
    spec: str = DEFAULT_AUTOENCODER,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    tiling: bool = False,
) -> Autoencoder:
    """``'pixel'`` or a local diffusers VAE folder, frozen, on ``device`` with weights in
    ``dtype`` (encode/decode still return float32). ``tiling`` turns on the VAE's tiled
    encoding/decoding for large videos (ignored for pixels)."""
    if str(spec) == "pixel":
        return PixelAutoencoder(scale=1.0)
    return load_diffusers_autoencoder(str(spec), device=device, dtype=dtype, tiling=tiling)


__all__ = [
    "DEFAULT_AUTOENCODER",
    "Autoencoder",
    "DiffusersAutoencoder",
    "PixelAutoencoder",
    "SUPPORTED",
    "load_autoencoder",
]
