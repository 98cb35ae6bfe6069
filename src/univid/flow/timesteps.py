"""Time sampling for training and time grids for sampling."""

from __future__ import annotations

import torch


def logit_normal(
    n: int,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """t = sigmoid(u), u ~ N(mean, std^2): puts more weight on the middle of the path (SD3)."""
    u = torch.randn(n, generator=generator, device=device) * std + mean
    return torch.sigmoid(u)


def uniform(
    n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """t ~ U(0, 1)."""
    return torch.rand(n, generator=generator, device=device)


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = s t / (1 + (s - 1) t): s > 1 spends more of the steps near the noise end."""
    return shift * t / (1 + (shift - 1) * t)


def sampling_times(
    steps: int, shift: float = 1.0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``steps + 1`` times from 1 (noise) down to 0 (data), optionally shifted."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, device=device), shift)
