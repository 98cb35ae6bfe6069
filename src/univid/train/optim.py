"""The optimizer, its learning-rate schedule and the EMA of the weights."""

from __future__ import annotations

import math

import torch
from torch import nn

from univid.config import TrainConfig
from univid.parallel import local


def lr_factor(step: int, warmup: int, total: int, decay: str) -> float:
    """Linear warm-up to 1, then constant or cosine down to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(
    model: nn.Module, t: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (fp32 state) and its warm-up + decay schedule."""
    trained = [p for p in model.parameters() if p.requires_grad]  # frozen: a LoRA run's base
    optimizer = torch.optim.AdamW(trained, lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, t.warmup, t.steps, t.decay)
    )
    return optimizer, scheduler


def rewind(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: int) -> None:
    """Take back ``steps`` steps of the schedule (updates that were skipped after the fact)."""
    if steps <= 0:
        return
    scheduler.last_epoch -= steps
    lrs = [
        base * factor(scheduler.last_epoch)
        for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)
    ]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, weight: float | torch.Tensor) -> None:
    """ema <- ema + weight * (model - ema), in place (shard by shard under FSDP); ``weight`` is
    1 - decay, or a device tensor that is 0 where the update was skipped."""
    pairs = [(e, p) for e, p in zip(ema.parameters(), model.parameters()) if p.requires_grad]
    ema_params = [local(e) for e, _ in pairs]  # frozen weights (a LoRA run's base) stay equal
    torch._foreach_lerp_(ema_params, [local(p).detach() for _, p in pairs], weight)
