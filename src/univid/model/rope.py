"""Rotary position embeddings: 3-D for video tokens, 1-D for text tokens, in one sequence.

Each head's channels are taken in pairs and each pair is rotated by an angle ``position *
frequency``. The head dimension is split into three bands (frame, row, column, see
:func:`univid.model.embed.split_3d`); a video token at (f, r, c) rotates the frame band by f,
the row band by r and the column band by c, so the score of two tokens depends only on their
offset (df, dr, dc).

Placement of text: text token i sits at position -(1 + i) on all three axes at once, which makes
text-to-text scores a plain 1-D RoPE of i - j. Video positions are >= 0 and text positions are
<= -1, so the two never collide whatever the caption length, and no position depends on how much
padding a batch carries (a batch equals its items run one by one).
"""

from __future__ import annotations

import torch

from univid.model.embed import split_3d


def rope_frequencies(dim: int, base: float = 10000.0, device: torch.device | None = None):
    """The dim/2 rotation frequencies base^(-2i/dim) of a band of ``dim`` (even) channels."""
    return base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)


def stream_positions(
    text_len: int,
    grid: tuple[int, int, int],
    device: torch.device | None = None,
    first_frame: int = 0,
) -> torch.Tensor:
    """(text_len + T'*H'*W', 3) positions of the sequence [text | video], video in raster order,
    its frames numbered from ``first_frame`` (the frames after a KV cache's context)."""
    text = -(1.0 + torch.arange(text_len, dtype=torch.float64, device=device))
    axes = [torch.arange(n, dtype=torch.float64, device=device) for n in grid]
    axes[0] = axes[0] + first_frame
    video = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return torch.cat([text[:, None].expand(-1, 3), video])


def rope_angles(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Positions (N, 3) -> rotation angles (N, head_dim/2), one band of pairs per axis."""
    bands = [
        positions[:, axis, None] * rope_frequencies(width, base, positions.device)
        for axis, width in enumerate(split_3d(head_dim))
    ]
    return torch.cat(bands, dim=-1)


def rope_tables(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles (N, head_dim/2) -> fp32 (cos, sin) tables (N, head_dim) for :func:`apply_rope`.

    Built once per forward and shared by every block: cos repeats each angle's cosine for its
    pair, sin carries the signs of the rotation (-sin, +sin).
    """
    cos, sin = torch.cos(angles).float(), torch.sin(angles).float()
    return cos.repeat_interleave(2, dim=-1), torch.stack([-sin, sin], dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of x (..., N, head_dim) by the angles of ``tables``.

    (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin), written as x * cos + swap(x) * sin so
    that it is three passes over x (swap, multiply, fused multiply-add), in x's dtype: fp32, or
    bf16 under autocast, where casting x to fp32 and back cost more than the rotation.
    """
    cos, sin = (table.to(x.dtype) for table in tables)
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return torch.addcmul(x * cos, swapped, sin)
