"""Tiny randomly initialised diffusers VAEs and univid models saved as local folders (no weights
ship offline).

``save_tiny(kind, folder)`` saves one of the five supported classes with safetensors weights and
returns the folder, to be loaded through ``load_autoencoder(str(folder))`` like a real one.
Each config sets non-trivial normalisation values so tests can see them used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# kind -> (diffusers class, constructor args, (channels, temporal ratio, spatial ratio, frame step))
TINY: dict[str, tuple[str, dict[str, Any], tuple[int, int, int, int]]] = {
    "wan": (
        "AutoencoderKLWan",
        dict(
            base_dim=4,
            z_dim=4,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.1, -0.2, 0.3, -0.4],
            latents_std=[0.5, 1.5, 2.0, 0.8],
            scale_factor_spatial=8,
            scale_factor_temporal=4,
        ),
        (4, 4, 8, 4),
    ),
    "ltx": (
        "AutoencoderKLLTXVideo",
        dict(
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False,) * 5,
            upsample_residual=(False,) * 4,
            upsample_factor=(1,) * 4,
            patch_size=1,
            patch_size_t=1,
            scaling_factor=0.7,
        ),
        (8, 4, 4, 4),
    ),
    "cogvideox": (
        "AutoencoderKLCogVideoX",
        dict(
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            scaling_factor=1.15258426,
        ),
        (4, 4, 8, 8),
    ),
    "hunyuan": (
        "AutoencoderKLHunyuanVideo",
        dict(
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=4,
            down_block_types=("HunyuanVideoDownBlock3D",) * 4,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
            scaling_factor=0.476986,
        ),
        (4, 4, 8, 4),
    ),
    "kl": (
        "AutoencoderKL",
        dict(
            block_out_channels=(8, 8, 8),
            latent_channels=4,
            norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            sample_size=32,
            scaling_factor=0.3611,
            shift_factor=0.1159,
        ),
        (4, 1, 4, 1),
    ),
}

# LTX keeps latents_mean / latents_std as buffers saved with the weights.
LTX_MEAN = [0.05 * i - 0.2 for i in range(8)]
LTX_STD = [0.5 + 0.25 * i for i in range(8)]


def build_tiny(kind: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A tiny random model of ``kind`` (a key of :data:`TINY`), in eval mode."""
    import diffusers

    class_name, args, _ = TINY[kind]
    torch.manual_seed(seed)
    model = getattr(diffusers, class_name)(**{**args, **overrides})
    if class_name == "AutoencoderKLLTXVideo":
        model.latents_mean.copy_(torch.tensor(LTX_MEAN))
        model.latents_std.copy_(torch.tensor(LTX_STD))
    return model.eval()


def save_tiny(kind: str, folder: Path, seed: int = 0, **overrides: Any) -> Path:
    """Save a tiny random ``kind`` VAE (safetensors weights + config.json) into ``folder``."""
    folder = Path(folder)
    build_tiny(kind, seed=seed, **overrides).save_pretrained(folder, safe_serialization=True)
    return folder


def save_tiny_wan(folder: Path) -> Path:
    """A tiny random ``AutoencoderKLWan`` in ``folder``: 4 latent channels, spatial ratio 8,
    temporal ratio 4 (videos of 1 + 4k frames, sides multiple of 8), latents_mean/std set."""
    return save_tiny("wan", folder)


def random_model_folder(folder: Path, *overrides: str, std: float = 0.0) -> Path:
    """A univid model folder with the tiny preset's config (and ``overrides``) and freshly
    initialised weights: the output head starts at zero, so its velocity is 0 and a video is
    its noise; ``std`` > 0 draws every weight from N(0, std) instead (the head too)."""
    import json

    from safetensors.torch import save_file

    from univid.build import build_model
    from univid.config import resolve_config

    cfg = resolve_config("tiny", list(overrides))
    net = build_model(cfg.model)
    if std:
        for p in net.parameters():
            torch.nn.init.normal_(p, std=std)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    save_file(net.state_dict(), str(folder / "model.safetensors"))
    return folder
