"""The DiT single stream: adaLN-Zero blocks, 3-D RoPE and QK-norm over [text | video].

The same one sequence as :mod:`univid.model.encoder` (no cross-attention, no second stream), but
time enters the way DiT, PixArt-alpha, SD3 and Flux do it: a conditioning vector c = time
embedding + pooled text sets a shift, scale and gate around every attention and MLP (adaptive
LayerNorm). Gates and the output head start at zero, so every block starts as the identity.
``adaln='shared'`` computes the modulation with one MLP for all blocks and gives each block a
learned offset (PixArt-alpha's adaLN-single), which removes most of the modulation parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from univid.model.embed import (
    TimeEmbedding,
    patchify,
    per_sample_linear,
    unpatchify,
    velocity_from_data,
)
from univid.model.rope import apply_rope, rope_angles, rope_tables, stream_positions

MODULATIONS = 6  # shift, scale, gate for attention; shift, scale, gate for the MLP


def modulation(mlp: nn.Sequential, c: torch.Tensor) -> torch.Tensor:
    """SiLU -> Linear of the conditioning vector c (B, D), the same bits whatever B."""
    return per_sample_linear(mlp[1], mlp[0](c))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, N, D) * (1 + scale) + shift, with shift and scale (B, D) per sample (one pass)."""
    return torch.addcmul(shift[:, None], x, 1 + scale[:, None])


class Attention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V through ``F.scaled_dot_product_attention`` (its kernel is
    picked with ``torch.nn.attention.sdpa_kernel`` around the call). A module of its own so that
    another implementation can be swapped in from outside (see :func:`univid.speed.attention`).
    """

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """q, k, v (B, heads, N, head_dim); mask None or (B, 1, 1, N) bool, True = attend."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class SwiGLU(nn.Module):
    """silu(x W1) * (x W3) -> W2, the gated MLP of LLaMA and Flux."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def make_mlp(width: int, mlp_ratio: float, kind: str) -> nn.Module:
    """GELU MLP of hidden ``mlp_ratio * width``, or a SwiGLU with the same parameter count."""
    hidden = int(mlp_ratio * width)
    if kind == "swiglu":
        return SwiGLU(width, int(2 * hidden / 3))
    # Exact (erf) GELU: CPU's vectorised tanh-GELU rounds the elements of a tensor's tail
    # differently, which made a batch differ from its items run alone.
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


class DiTBlock(nn.Module):
    """Pre-norm attention + MLP, each wrapped in shift/scale before and a gate after."""

    def __init__(
        self, width: int, heads: int, mlp_ratio: float, mlp: str, qk_norm: bool, shared: bool
    ) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        norm = (lambda: nn.RMSNorm(self.head_dim, eps=1e-6)) if qk_norm else nn.Identity
        self.q_norm, self.k_norm = norm(), norm()
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = make_mlp(width, mlp_ratio, mlp)
        self.shared = shared
        self.attention = Attention()
        if shared:  # per-block learned offset on the shared modulation
            self.offset = nn.Parameter(torch.zeros(MODULATIONS, width))
        else:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, MODULATIONS * width))

    def modulation_of(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, 6, D) shift/scale/gate pairs for this block from c (or the shared modulation)."""
        if self.shared:
            return cond + self.offset
        return modulation(self.modulation, cond).view(cond.shape[0], MODULATIONS, -1)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x (B, N, D); cond is c (B, D), or the shared modulation (B, 6, D) for shared blocks;
        rope the (cos, sin) tables (N, head_dim); mask None (attend everywhere) or (B, 1, 1, N)
        bool, False = padding (never attended)."""
        B, N, D = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation_of(cond).unbind(dim=1)

        h = modulate(self.norm1(x), shift1, scale1)
        q, k, v = self.qkv(h).view(B, N, 3, self.heads, self.head_dim).unbind(dim=2)
        q = apply_rope(self.q_norm(q), rope).transpose(1, 2)  # (B, heads, N, head_dim)
        k = apply_rope(self.k_norm(k), rope).transpose(1, 2)
        v = v.transpose(1, 2)
        attn = self.attention(q, k, v, mask)
        x = torch.addcmul(x, gate1[:, None], self.proj(attn.transpose(1, 2).reshape(B, N, D)))
        h = modulate(self.norm2(x), shift2, scale2)
        return torch.addcmul(x, gate2[:, None], self.mlp(h))


class DiTBlocks(nn.ModuleList):
    """The stack of blocks, called as one module (so a wrapper can stand in for all of them)."""

    def forward(
        self,
        seq: torch.Tensor,
        cond: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        for block in self:
            seq = block(seq, cond, rope, mask)
        return seq


class DiTStream(nn.Module):
    """forward(x, t, text, text_mask) -> velocity, with x and velocity shaped (B, C, T, H, W).

    ``prediction`` works as in :class:`univid.model.EncoderStream`; ``adaln`` is 'block'
    (adaLN-Zero, one modulation MLP per block) or 'shared' (one for all blocks + offsets).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        patch: tuple[int, int, int] = (2, 4, 4),
        width: int = 256,
        depth: int = 6,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        text_dim: int = 384,
        time_freq_dim: int = 256,
        prediction: str = "velocity",
        min_time: float = 0.05,
        adaln: str = "block",
        mlp: str = "gelu",
        qk_norm: bool = True,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        head_dim = width // heads
        if width % heads or head_dim % 2 or head_dim < 6:
            raise ValueError(f"width/heads must be an even head size >= 6, got {width}/{heads}")
        if prediction not in ("velocity", "data"):
            raise ValueError(f"prediction must be 'velocity' or 'data', got {prediction!r}")
        if adaln not in ("block", "shared"):
            raise ValueError(f"adaln must be 'block' or 'shared', got {adaln!r}")
        if mlp not in ("gelu", "swiglu"):
            raise ValueError(f"mlp must be 'gelu' or 'swiglu', got {mlp!r}")
        self.patch, self.width, self.head_dim = tuple(patch), width, head_dim
        self.prediction, self.min_time, self.rope_base = prediction, min_time, rope_base
        self.shared = adaln == "shared"
        patch_dim = in_channels * math.prod(patch)
        self.video_in = nn.Linear(patch_dim, width)
        self.text_norm = nn.LayerNorm(text_dim)
        self.text_in = nn.Linear(text_dim, width)
        self.text_pool = nn.Linear(text_dim, width)  # pooled caption -> conditioning vector
        self.time_embed = TimeEmbedding(time_freq_dim, width)
        if self.shared:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, MODULATIONS * width))
        self.blocks = DiTBlocks(
            DiTBlock(width, heads, mlp_ratio, mlp, qk_norm, self.shared) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(width, patch_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """All initialisation in one place: xavier linears; modulations, gates, head at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        zero = [self.modulation_out[1], self.head]
        zero += [self.modulation[1]] if self.shared else [b.modulation[1] for b in self.blocks]
        for linear in zero:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def condition(self, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None):
        """c (B, D) = time embedding + projection of the mean of the real caption tokens."""
        if text_mask is None:
            pooled = text.mean(1)
        else:
            weights = text_mask.to(text.dtype)[..., None]
            pooled = (text * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.time_embed(t) + per_sample_linear(self.text_pool, pooled)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x (B, C, T, H, W), t (B,), text (B, L, Dtext), text_mask (B, L) bool, True = real,
        or None when no caption has padding: then attention runs without any mask, which lets
        every fused kernel take it."""
        B, C, T, H, W = x.shape
        pt, ph, pw = self.patch
        grid = (T // pt, H // ph, W // pw)
        L = text.shape[1]
        text = self.text_norm(text)
        c = self.condition(t, text, text_mask)
        video = self.video_in(patchify(x, self.patch))
        seq = torch.cat([self.text_in(text).to(video.dtype), video], dim=1)
        mask = None
        if text_mask is not None:  # (B, 1, 1, N): broadcast over heads and queries, never N x N
            mask = torch.cat([text_mask, text_mask.new_ones(B, video.shape[1])], dim=1)
            mask = mask[:, None, None, :]
        angles = rope_angles(stream_positions(L, grid, x.device), self.head_dim, self.rope_base)
        cos, sin = rope_tables(angles)
        rope = (cos[:, None], sin[:, None])  # broadcast over heads: q is (B, N, heads, head_dim)
        cond = modulation(self.modulation, c).view(B, MODULATIONS, -1) if self.shared else c
        seq = self.blocks(seq, cond, rope, mask)
        shift, scale = modulation(self.modulation_out, c).chunk(2, dim=-1)
        out = self.head(modulate(self.norm_out(seq[:, L:]), shift, scale))
        out = unpatchify(out, self.patch, (C, T, H, W))
        if self.prediction == "velocity":
            return out
        return velocity_from_data(x, t, out, self.min_time)
