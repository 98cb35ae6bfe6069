"""ODE sampling from noise (t = 1) to data (t = 0), and classifier-free guidance.

Guidance is wrapped *around* the model: :func:`guided` turns a conditional network into a plain
velocity field ``v(x, t)`` that evaluates both branches in one batched forward and mixes them as

    v = v_uncond + g * (v_cond - v_uncond).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from univid.flow.timesteps import sampling_times

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler_sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    steps: int,
    shift: float = 1.0,
    callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from t = 1 to t = 0 with ``steps`` Euler steps.

    x_{t_next} = x_t + (t_next - t) v(x_t, t); the steps are negative since t decreases.
    """
    times = sampling_times(steps, shift, device=noise.device)
    x = noise
    for i in range(steps):
        t = times[i].expand(x.shape[0])
        x = x + (times[i + 1] - times[i]) * velocity_fn(x, t).to(x.dtype)
        if callback is not None:
            callback(i)
    return x


def conditional(model: nn.Module, text: torch.Tensor, text_mask: torch.Tensor) -> VelocityFn:
    """Bind a text condition to the model: v(x, t) = model(x, t, text, text_mask)."""
    return lambda x, t: model(x, t, text, text_mask)


def guided(
    model: nn.Module,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
    scale: float,
) -> VelocityFn:
    """Classifier-free guidance as a velocity field; both branches run in one batched forward.

    ``null_text``/``null_mask`` (B, L0, D) encode the empty caption; they are padded to the
    caption length so the two halves stack into one batch of 2B.
    """
    if scale == 1.0:
        return conditional(model, text, text_mask)
    L = max(text.shape[1], null_text.shape[1])
    text_both = torch.cat([_pad(text, L), _pad(null_text, L)])
    mask_both = torch.cat([_pad(text_mask, L), _pad(null_mask, L)])

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_cond, v_uncond = model(torch.cat([x, x]), torch.cat([t, t]), text_both, mask_both).chunk(
            2
        )
        return v_uncond + scale * (v_cond - v_uncond)

    return velocity


def _pad(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad dim 1 of (B, L, ...) to ``length`` (False for masks: padding is ignored)."""
    if x.shape[1] == length:
        return x
    pad = x.new_zeros(x.shape[0], length - x.shape[1], *x.shape[2:])
    return torch.cat([x, pad], dim=1)
