"""ODE sampling from noise (t = 1) to data (t = 0), and classifier-free guidance.

Guidance is wrapped *around* the model: :func:`guided` turns a conditional network into a plain
velocity field ``v(x, t)`` that evaluates both branches in one batched forward and mixes them as

    v = v_uncond + g * (v_cond - v_uncond).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from univid.flow.path import expand_time
from univid.flow.timesteps import sampling_times

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


SOLVERS = ("euler", "heun", "midpoint")


@dataclass(frozen=True)
class Given:
    """Frames given as conditioning: they stay at t = 0 and come back bit for bit.

    ``x`` is like the noise (B, C, T, H, W) and holds the given values where ``mask`` is True
    (elsewhere anything); ``mask`` (B, T') bool marks the given latent frames, any indices.
    """

    x: torch.Tensor
    mask: torch.Tensor

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        """The given frames in place of the noise at t = 1."""
        return torch.where(self.pixels(noise), self.x.to(noise.dtype), noise)

    def pixels(self, like: torch.Tensor) -> torch.Tensor:
        """The mask broadcast over (B, C, T, H, W)."""
        return expand_time(self.mask, like).bool()

    def field(self, velocity_fn: VelocityFn) -> VelocityFn:
        """``velocity_fn`` with the given frames' time at 0 and their velocity zero, so every
        solver leaves them exactly as they are (x + h * 0 = x)."""

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            times = torch.where(self.mask, torch.zeros_like(t[:, None]), t[:, None])  # (B, T')
            v = velocity_fn(x, times)
            return torch.where(self.pixels(v), torch.zeros_like(v), v)

        return velocity


def euler_sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    steps: int,
    shift: float = 1.0,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from t = 1 to t = 0 with ``steps`` Euler steps.

    x_{t_next} = x_t + (t_next - t) v(x_t, t); the steps are negative since t decreases.
    """
    return ode_sample(velocity_fn, noise, steps, "euler", shift, callback)


def ode_sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    steps: int,
    solver: str = "euler",
    shift: float = 1.0,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    given: Given | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from t = 1 (noise) to t = 0 over ``steps`` intervals.

    - 'euler' (1st order, 1 velocity per step): x + h v(x, t).
    - 'heun' (2nd order, trapezoid): x' = x + h v(x, t), then x + h/2 (v(x, t) + v(x', t + h));
      the last step, which ends on the data at t = 0, is a plain Euler step, as in EDM, so
      the cost is 2 * steps - 1 velocities.
    - 'midpoint' (2nd order, 2 velocities per step): x + h v(x + h/2 v(x, t), t + h/2).

    ``shift`` bends the time grid (see :func:`univid.flow.sampling_times`); :func:`nfe` gives
    the number of velocity evaluations. With ``given`` frames the model gets per-frame t
    (B, T'): 0 for the given frames, which are returned bit for bit, and the common t for
    the rest. ``callback(i, x)`` is called after step i with the state it reached.
    """
    _check_solver(solver)
    times = sampling_times(steps, shift, device=noise.device)
    x = noise
    if given is not None:
        velocity_fn, x = given.field(velocity_fn), given.start(noise)
    for i in range(steps):
        t, t_next = times[i], times[i + 1]
        h = t_next - t
        v = velocity_fn(x, t.expand(x.shape[0])).to(x.dtype)
        if solver == "midpoint":
            x_mid = x + (h / 2) * v
            x = x + h * velocity_fn(x_mid, (t + h / 2).expand(x.shape[0])).to(x.dtype)
        elif solver == "heun" and i < steps - 1:
            x_next = x + h * v
            v_next = velocity_fn(x_next, t_next.expand(x.shape[0])).to(x.dtype)
            x = x + (h / 2) * (v + v_next)
        else:
            x = x + h * v
        if callback is not None:
            callback(i, x)
    return x if given is None else given.start(x)


def euler_path(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    steps: int,
    keep: int,
    given: Given | None = None,
) -> torch.Tensor:
    """The states of :func:`ode_sample` (Euler, no shift) at ``keep`` evenly spaced times
    (``steps`` a multiple of ``keep``): (keep, B, C, T, H, W), entry k at t = 1 - (k + 1) / keep,
    so the last is the sample itself (the same bits as ``ode_sample``: the given frames' velocity
    is zero, so every state already holds them exactly)."""
    if steps % keep:
        raise ValueError(f"steps={steps} is not a multiple of keep={keep}")
    states: list[torch.Tensor] = []

    def collect(i: int, x: torch.Tensor) -> None:
        if (i + 1) % (steps // keep) == 0:
            states.append(x)

    ode_sample(velocity_fn, noise, steps, "euler", 1.0, collect, given)
    return torch.stack(states)


def _check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")


def nfe(solver: str, steps: int) -> int:
    """Velocity evaluations (network forwards) that :func:`ode_sample` makes."""
    _check_solver(solver)
    return {"euler": steps, "heun": 2 * steps - 1, "midpoint": 2 * steps}[solver]


def conditional(
    model: Callable[..., torch.Tensor], text: torch.Tensor, text_mask: torch.Tensor | None
) -> VelocityFn:
    """Bind a text condition to the model: v(x, t) = model(x, t, text, text_mask)."""
    return lambda x, t: model(x, t, text, text_mask)


def guidance_inputs(
    text: torch.Tensor,
    text_mask: torch.Tensor,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The captions :func:`guided` runs the model on: the caption alone at ``scale`` 1, else
    caption and empty caption stacked into one batch of 2B (padded to one length); the mask is
    None when no caption has padding (checked once here, not at every step), so attention runs
    without a mask."""
    if scale != 1.0:
        L = max(text.shape[1], null_text.shape[1])
        text = torch.cat([_pad(text, L), _pad(null_text, L)])
        text_mask = torch.cat([_pad(text_mask, L), _pad(null_mask, L)])
    return text, None if bool(text_mask.all()) else text_mask


def guided(
    model: Callable[..., torch.Tensor],
    text: torch.Tensor,
    text_mask: torch.Tensor,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
    scale: float,
) -> VelocityFn:
    """Classifier-free guidance as a velocity field; both branches run in one batched forward
    on the captions of :func:`guidance_inputs`. ``null_text``/``null_mask`` (B, L0, D) encode
    the empty caption."""
    text_both, mask_both = guidance_inputs(text, text_mask, null_text, null_mask, scale)
    if scale == 1.0:
        return conditional(model, text_both, mask_both)

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
