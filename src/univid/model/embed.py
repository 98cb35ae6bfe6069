"""Token embeddings: patchify / unpatchify, sin-cos positions, time features.

Only torch is imported here: the model knows nothing of flows, data or training.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def patchify(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """Video (B, C, T, H, W) -> tokens (B, N, C*pt*ph*pw), N = T/pt * H/ph * W/pw, raster order."""
    B, C, T, H, W = x.shape
    pt, ph, pw = patch
    x = x.reshape(B, C, T // pt, pt, H // ph, ph, W // pw, pw)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, T', H', W', C, pt, ph, pw)
    return x.reshape(B, (T // pt) * (H // ph) * (W // pw), C * pt * ph * pw)


def unpatchify(
    tokens: torch.Tensor, patch: tuple[int, int, int], shape: tuple[int, int, int, int]
) -> torch.Tensor:
    """Tokens (B, N, C*pt*ph*pw) -> video (B, C, T, H, W); the inverse of :func:`patchify`."""
    C, T, H, W = shape
    pt, ph, pw = patch
    B = tokens.shape[0]
    x = tokens.reshape(B, T // pt, H // ph, W // pw, C, pt, ph, pw)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, T', pt, H', ph, W', pw)
    return x.reshape(B, C, T, H, W)


def sincos_1d(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Positions (...,) -> (..., dim) features [sin(p w_i), cos(p w_i)], w_i = base^(-2i/dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(base) * torch.arange(half, dtype=torch.float32, device=positions.device) / half
    )
    angles = positions.float()[..., None] * freqs  # (..., half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def split_3d(dim: int) -> tuple[int, int, int]:
    """Even widths (frame, row, column) that add up to ``dim`` (which must be even)."""
    spatial = 2 * (dim // 6)
    return dim - 2 * spatial, spatial, spatial


def sincos_3d(grid: tuple[int, int, int], dim: int, device: torch.device) -> torch.Tensor:
    """Factorised positions of a (T', H', W') token grid -> (T'*H'*W', dim), raster order.

    Each axis gets its own band of sin-cos features, so a token's code says which frame, row
    and column it is at independently.
    """
    parts = []
    for size, width, axis in zip(grid, split_3d(dim), range(3)):
        shape = [1, 1, 1]
        shape[axis] = size
        pos = torch.arange(size, device=device, dtype=torch.float32).reshape(shape).expand(*grid)
        parts.append(sincos_1d(pos.reshape(-1), width))
    return torch.cat(parts, dim=-1)


def per_sample_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` for per-sample vectors x (B, D) whose bits do not depend on B.

    CPU BLAS picks its kernel by the number of rows, so row b of a small (B, D) matmul changes
    in the last bit with B, and a batch of videos would drift from the same videos made alone.
    Accumulating in float64 and rounding once to float32 removes that (checked for B = 1..64).
    Only fp32 on CPU takes this path; the cost is a few per-sample matmuls per forward.
    """
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return linear(x)
    return F.linear(x.double(), *_float64(linear)).float()


def _float64(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """linear's weight and bias in float64. Sampling, which calls every linear with the same
    weights at each step, keeps the copies while the weights are unchanged (copying a block's
    modulation weights cost a sixth of a cached streaming step); autograd gets new ones."""
    weight, bias = linear.weight, linear.bias
    if torch.is_grad_enabled():
        return weight.double(), bias.double()
    versions = (weight._version, bias._version)
    kept = linear.__dict__.get("_float64")
    if kept is None or kept[0] is not weight or kept[1] is not bias or kept[2] != versions:
        copies = (weight.double(), bias.double())
        kept = linear.__dict__["_float64"] = (weight, bias, versions, *copies)
    return kept[3], kept[4]


def rowwise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, ndim: int) -> torch.Tensor:
    """An elementwise ``fn`` of per-sample input x (``ndim`` dimensions, batch first), or of
    per-frame input (B, G, ...) one row at a time.

    CPU's vectorised SiLU and sin round an element by where it falls in the tensor, so feeding
    contiguous (B, ...) slices keeps each row's bits those of a per-sample call: per-frame time
    with every frame equal then gives the per-sample result exactly. G = 1 + frames is small.
    """
    if x.ndim == ndim:
        return fn(x)
    return torch.stack([fn(x[:, g].contiguous()) for g in range(x.shape[1])], dim=1)


class TimeEmbedding(nn.Module):
    """Continuous t in [0, 1] -> sinusoidal features -> MLP -> (B, D)."""

    def __init__(self, freq_dim: int, dim: int) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) -> (B, D), or per frame (B, G) -> (B, G, D)."""
        # Scale t to [0, 1000] so the highest frequencies resolve small changes of t.
        h = rowwise(lambda r: sincos_1d(r * 1000.0, self.freq_dim), t, 1)
        h = per_sample_linear(self.mlp[0], h.to(self.mlp[0].weight.dtype))
        return per_sample_linear(self.mlp[2], rowwise(self.mlp[1], h, 2))


def check_time(t: torch.Tensor, batch: int, frames: int) -> None:
    """Raise ValueError unless t is (B,) (one time per sample) or (B, T') (one per latent
    frame: T' = frames after the temporal patch)."""
    if tuple(t.shape) not in ((batch,), (batch, frames)):
        raise ValueError(
            f"t must be ({batch},) or ({batch}, {frames}) (one time per latent frame), "
            f"got {tuple(t.shape)}"
        )


def frame_times(t: torch.Tensor, frames: int) -> torch.Tensor:
    """t (B,) or (B, T') -> (B, 1, frames, 1, 1): each latent frame's time over its
    ``frames / T'`` frames of a (B, C, frames, H, W) tensor."""
    if t.ndim == 1:
        return t.reshape(-1, 1, 1, 1, 1)
    per = t.repeat_interleave(frames // t.shape[1], dim=1)
    return per.reshape(t.shape[0], 1, frames, 1, 1)


def velocity_from_data(
    x: torch.Tensor, t: torch.Tensor, x_data: torch.Tensor, min_time: float = 0.05
) -> torch.Tensor:
    """v = (x_t - x_data) / t, the velocity of the straight path through x_t and x_data.

    With pixel patches as wide as the model (C*pt*ph*pw >= D) a network cannot carry the noise
    of its input through to a velocity output, but clean data lies on a small manifold and is
    easy to predict; this reparameterisation keeps the velocity interface (JiT, Li & He 2025).
    t is floored at ``min_time`` so errors are not blown up near t=0; it is (B,) or per frame
    (B, T').
    """
    tt = frame_times(t.float().clamp_min(min_time), x.shape[2])
    return (x.float() - x_data.float()) / tt
