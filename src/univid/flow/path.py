"""The rectified-flow path and loss. Convention: t = 1 is pure noise, t = 0 is data.

    x_t = (1 - t) * x_data + t * noise          (a straight line in t)
    v   = d x_t / d t = noise - x_data          (constant along the line)

The network regresses v with a mean squared error.

A few-step student (:func:`average_velocity_loss`) instead regresses the *average* velocity over
one of its steps, from t_start to t_end along a teacher's sampling path,

    u = (x_start - x_end) / (t_start - t_end),

so that one Euler step x_end = x_start + (t_end - t_start) u lands where the teacher went.

t is one time per sample (B,), or one per latent frame (B, T') ("diffusion forcing"): then each
frame walks its own straight line, and frames given as conditioning sit at t = 0 (x_t is the
data, bit for bit) and carry no loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def expand_time(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, ...) so t broadcasts over every non-batch dimension of ``like``;
    per-frame (B, T') -> (B, 1, T, 1, 1) for ``like`` (B, C, T, H, W), each latent frame's time
    repeated over its T / T' frames."""
    if t.ndim == 1:
        return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)
    frames = like.shape[2]
    if frames % t.shape[1]:
        raise ValueError(f"{t.shape[1]} per-frame times do not divide {frames} frames")
    per = t.repeat_interleave(frames // t.shape[1], dim=1)
    return per.reshape(t.shape[0], 1, frames, 1, 1).to(like.dtype)


def sample_path(
    x_data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Point on the straight path at time t (B,) or (B, T') and the target velocity:
    (x_t, noise - x_data)."""
    tt = expand_time(t, x_data)
    return (1 - tt) * x_data + tt * noise, noise - x_data


def flow_loss(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_data: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    given: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between ``velocity_fn(x_t, t)`` and the path velocity (fp32)."""
    return flow_loss_per_sample(velocity_fn, x_data, noise, t, given).mean()


def _masked_mean(error: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean of ``error`` (B, C, T, H, W) over the frames not ``given`` (B, T')."""
    if given is None:
        return error.flatten(1).mean(1)
    keep = expand_time((~given).float(), error).expand_as(error).flatten(1)  # (B, C*T*H*W)
    return (error.flatten(1) * keep).sum(1) / keep.sum(1).clamp_min(1.0)


def average_velocity_loss(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_start: torch.Tensor,
    x_end: torch.Tensor,
    t_start: torch.Tensor,
    t_end: torch.Tensor,
    given: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample mean squared error (B,) between ``velocity_fn(x_start, t)`` and the average
    velocity (x_start - x_end) / (t_start - t_end) of a step from t_start to t_end (B,), each
    t_start > t_end. ``t`` is t_start (B,), or per frame (B, T') with the ``given`` frames at 0
    (they carry no loss)."""
    t = t_start if given is None else t_start[:, None].masked_fill(given, 0.0)
    span = expand_time(t_start - t_end, x_start)
    target = (x_start.float() - x_end.float()) / span.float()
    error = (velocity_fn(x_start, t).float() - target) ** 2
    return _masked_mean(error, given)


def flow_loss_per_sample(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_data: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    given: torch.Tensor | None = None,
) -> torch.Tensor:
    """Like :func:`flow_loss`, but one mean squared error per sample: shape (B,).

    ``given`` (B, T') bool marks the latent frames given as conditioning (their t should be 0):
    they carry no loss, and each sample's error is the mean over its other frames only.
    """
    x_t, target = sample_path(x_data, noise, t)
    error = (velocity_fn(x_t, t).float() - target.float()) ** 2
    return _masked_mean(error, given)
