"""``'taef2'``: the built-in pretrained tiny image autoencoder TAEF2, applied frame by frame.

TAEF2 ("Tiny AutoEncoder for FLUX.2", Ollin Boer Bohan, MIT licence) maps RGB frames in
``[0, 1]`` to 32 latent channels at ``H/8 x W/8`` and back, with no temporal compression. Its
weights ship with univid (``univid/weights/taef2``, 2 x 2.7 MB fp16 safetensors with the MIT
notice) and load here with strict key checking: a missing, renamed, unexpected or wrong-shaped
tensor is refused with one line, and nothing is ever unpickled.

The network is written here from a fact sheet of its layout; both halves are an
``nn.Sequential`` whose indices are the tensor names:

* encoder: conv 3->64, block, [stride-2 conv, 3 blocks] x 3 (the last three blocks with the pool
  branch), conv 64->32;
* decoder: soft clamp ``tanh(z / 3) * 3``, conv 32->64, ReLU, 3 pool blocks, [upsample x2, conv,
  3 blocks] x 2, upsample x2, conv, block, conv 64->3.

A block is ``relu(convs(x) + x)`` with three 3x3 convs (ReLU between them); a pool block first
adds ``x + pool(x)``, where pool is 1x1 conv 64->256, GroupNorm(4), ReLU, 1x1 conv 256->64.

Latent normalisation (measured; see docs/data.md, "TAEF2"): raw TAEF2 latents of real frames
have mean ~0 and std ~0.88, so univid divides by one global std and shifts nothing:
``normalised = z / LATENT_STD``. Measured on 48 frames of the three real clips of
``../shared/realdata`` (16 spread over each video, 256x144 centre crops, univid's reader) with
``python benchmarks/taef2_latent_stats.py ../shared/realdata/*.mp4 --frames 16``: global mean
0.011, global std 0.882 (per video 0.885 Big Buck Bunny, 0.842 bikes, 0.918 carphone);
per-channel means -0.35 to 0.34, per-channel stds 0.61 to 1.12. A per-channel normalisation
would fit these 48 frames of three clips rather than footage in general, so one global figure
is used; the normalised latents have std ~1 and channels between ~0.7 and ~1.3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from univid.autoencoder.base import Autoencoder
from univid.errors import CorruptFileError, InputError

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "taef2"
CHANNELS = 32
SPATIAL_RATIO = 8
WIDTH = 64
# The global std of raw latents on real frames (module docstring): normalised = z / LATENT_STD.
LATENT_STD = 0.88
# Frames one encoder/decoder call sees (memory bound; the results do not depend on it).
FRAME_BATCH = 16


def _conv(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    """``relu(conv(x) + x)``; with ``pool``, ``x`` first becomes ``x + pool(x)``."""

    def __init__(self, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(WIDTH, WIDTH), nn.ReLU(), _conv(WIDTH, WIDTH), nn.ReLU(), _conv(WIDTH, WIDTH)
        )
        self.pool = None
        if pool:
            wide = 4 * WIDTH
            self.pool = nn.Sequential(
                nn.Conv2d(WIDTH, wide, 1, bias=False),
                nn.GroupNorm(4, wide),
                nn.ReLU(),
                nn.Conv2d(wide, WIDTH, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 64, h, w)
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


class SoftClamp(nn.Module):
    """``tanh(z / 3) * 3``: the decoder's input, kept within (-3, 3) without a hard edge."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / 3) * 3


def build_encoder() -> nn.Sequential:
    """RGB ``(N, 3, H, W)`` in [0, 1] -> raw latents ``(N, 32, H/8, W/8)``."""
    layers: list[nn.Module] = [_conv(3, WIDTH), Block()]
    for stage in range(3):
        layers.append(_conv(WIDTH, WIDTH, stride=2, bias=False))
        layers.extend(Block(pool=stage == 2) for _ in range(3))
    layers.append(_conv(WIDTH, CHANNELS))
    return nn.Sequential(*layers)


def build_decoder() -> nn.Sequential:
    """Raw latents ``(N, 32, h, w)`` -> RGB ``(N, 3, 8h, 8w)`` in about [0, 1]."""
    layers: list[nn.Module] = [SoftClamp(), _conv(CHANNELS, WIDTH), nn.ReLU()]
    layers.extend(Block(pool=True) for _ in range(3))
    for blocks in (3, 3, 1):
        layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers.append(_conv(WIDTH, WIDTH, bias=False))
        layers.extend(Block() for _ in range(blocks))
    layers.append(_conv(WIDTH, 3))
    return nn.Sequential(*layers)


def load_half(net: nn.Sequential, path: Path) -> nn.Sequential:
    """``net`` with the weights of ``path``: every tensor by name and shape, finite, or one line
    (:class:`CorruptFileError` for a damaged file, :class:`InputError` for a mismatch)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise CorruptFileError(f"cannot read {path} as safetensors: {exc}") from None
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise InputError(
            f"TAEF2 weights in {path} do not fit the network: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} wrong-shaped tensors "
            f"(first: {(missing + unexpected + wrong)[0]})"
        )
    bad = next((k for k, v in state.items() if not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CorruptFileError(f"TAEF2 weights in {path} are not finite (first: {bad})")
    net.load_state_dict(state)
    return net


def _frames(x: torch.Tensor, net: nn.Sequential) -> torch.Tensor:
    """Run the per-image ``net`` on every frame of ``(B, C, T, H, W)``."""
    batch, channels, frames, height, width = x.shape
    flat = x.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
    out = torch.cat([net(chunk) for chunk in flat.split(FRAME_BATCH)])
    return out.reshape(batch, frames, *out.shape[1:]).permute(0, 2, 1, 3, 4)


class TAEF2Autoencoder(Autoencoder):
    """TAEF2, frame-wise: ``(B, 3, T, H, W)`` in [-1, 1] <-> ``(B, 32, T, H/8, W/8)`` latents
    normalised to about unit variance. Height and width must be multiples of 8."""

    def __init__(
        self,
        folder: Path = WEIGHTS,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.spec = "taef2"
        self.channels = CHANNELS
        self.temporal_ratio = 1
        self.spatial_ratio = SPATIAL_RATIO
        self.frame_step = 1
        self.tiling = False
        self.device = torch.device(device)
        self.dtype = dtype
        self.encoder = load_half(build_encoder(), folder / "taef2_encoder.safetensors")
        self.decoder = load_half(build_decoder(), folder / "taef2_decoder.safetensors")
        for net in (self.encoder, self.decoder):
            net.to(self.device, dtype).eval().requires_grad_(False)

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        rgb = (video.to(self.device, self.dtype) + 1) / 2  # [-1, 1] -> [0, 1]
        return _frames(rgb, self.encoder).float() / LATENT_STD

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.device, torch.float32) * LATENT_STD
        rgb = _frames(z.to(self.dtype), self.decoder).float()
        return rgb * 2 - 1  # [0, 1] -> [-1, 1]; decode() clamps

    def normalisation(self) -> dict[str, Any]:
        return {"formula": "z / latents_std", "latents_std": LATENT_STD}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["dtype"] = str(self.dtype).removeprefix("torch.")
        return info


def load_taef2(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> TAEF2Autoencoder:
    """The bundled TAEF2, frozen, on ``device`` with weights in ``dtype``."""
    return TAEF2Autoencoder(WEIGHTS, device=device, dtype=dtype)
