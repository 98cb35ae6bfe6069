"""The rectified-flow path and loss. Convention: t = 1 is pure noise, t = 0 is data.

    x_t = (1 - t) * x_data + t * noise          (a straight line in t)
    v   = d x_t / d t = noise - x_data          (constant along the line)

The network regresses v with a mean squared error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, ...) so t broadcasts over every non-batch dimension of ``like``."""
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def sample_path(
    x_data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Point on the straight path at time t (B,) and the target velocity: (x_t, noise - x_data)."""
    tt = _expand(t, x_data)
    return (1 - tt) * x_data + tt * noise, noise - x_data


def flow_loss(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_data: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """Mean squared error between ``velocity_fn(x_t, t)`` and the path velocity (fp32)."""
    return flow_loss_per_sample(velocity_fn, x_data, noise, t).mean()


def flow_loss_per_sample(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_data: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """Like :func:`flow_loss`, but one mean squared error per sample: shape (B,)."""
    x_t, target = sample_path(x_data, noise, t)
    prediction = velocity_fn(x_t, t)
    return ((prediction.float() - target.float()) ** 2).flatten(1).mean(1)
