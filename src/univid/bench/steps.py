"""What the bench times: a model behind one interface (:class:`Runner`), synthetic inputs of one
size (:class:`Shape`), and the two steps.

A train step is forward + rectified-flow loss + backward + AdamW; a sampling step is one guided
velocity (batch 2B for the two branches of classifier-free guidance) plus the Euler update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from univid.build import build_model
from univid.config import Config
from univid.device import autocast
from univid.flow import flow_loss, logit_normal
from univid.speed import MatmulAttention, swap_attention

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
StepFn = Callable[..., tuple[Callable[[], object], torch.optim.Optimizer | None]]


@dataclass
class Shape:
    """Synthetic inputs of one size: batch, video (C, T, H, W) and caption length."""

    batch: int
    channels: int
    frames: int
    height: int
    width: int
    text_len: int
    text_dim: int
    patch: tuple[int, int, int]

    @property
    def video_tokens(self) -> int:
        return math.prod(n // p for n, p in zip((self.frames, self.height, self.width), self.patch))

    @property
    def tokens(self) -> int:
        return self.video_tokens + self.text_len


@dataclass
class Runner:
    """One model behind a common interface: ``forward(x, t, text)`` with x (B, C, T, H, W)."""

    name: str
    model: nn.Module
    forward: Forward
    settings: dict = field(default_factory=dict)


def univid_runner(cfg: Config, device: torch.device) -> Runner:
    """univid's model of ``cfg``, perturbed so that no path is zero, with the attention
    training uses (:class:`univid.speed.MatmulAttention`: SDPA except bf16 CPU training of
    short sequences)."""
    model = build_model(cfg.model).to(device)
    swap_attention(model, MatmulAttention)
    perturb(model)
    return Runner("univid", model, lambda x, t, text: model(x, t, text, None))


def perturb(model: nn.Module) -> None:
    """Give the zero-initialised gates and heads small values so every path does real work."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 1 and not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=gen).to(p) * 0.02)


def make_inputs(shape: Shape, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Video, noise, logit-normal times and caption embeddings of ``shape``."""
    gen = torch.Generator().manual_seed(seed)
    video = (shape.batch, shape.channels, shape.frames, shape.height, shape.width)
    return {
        "x": torch.randn(video, generator=gen).to(device),
        "noise": torch.randn(video, generator=gen).to(device),
        "t": logit_normal(shape.batch, generator=gen).to(device),
        "text": torch.randn(shape.batch, shape.text_len, shape.text_dim, generator=gen).to(device),
    }


def train_step_fn(
    runner: Runner, inputs: dict, device: torch.device, amp: torch.dtype | None
) -> tuple[Callable[[], None], torch.optim.Optimizer]:
    """forward + rectified-flow loss + backward + AdamW step; returns (step, optimizer)."""
    params = [p for p in runner.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    x, noise, t, text = inputs["x"], inputs["noise"], inputs["t"], inputs["text"]

    def step() -> None:
        with autocast(device, amp):
            loss = flow_loss(lambda xt, tt: runner.forward(xt, tt, text), x, noise, t)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, optimizer


def sample_step_fn(
    runner: Runner, inputs: dict, device: torch.device, amp: torch.dtype | None
) -> tuple[Callable[[], torch.Tensor], None]:
    """One guided Euler step: both guidance branches in one forward of batch 2B."""
    x, t, text = inputs["noise"], inputs["t"], inputs["text"]
    text_both = torch.cat([text, torch.zeros_like(text)])

    @torch.no_grad()
    def step() -> torch.Tensor:
        with autocast(device, amp):
            out = runner.forward(torch.cat([x, x]), torch.cat([t, t]), text_both).float()
            v_cond, v_uncond = out.chunk(2)
        return x - 0.04 * (v_uncond + 4.0 * (v_cond - v_uncond))

    return step, None


def step_fn(kind: str) -> StepFn:
    """The step builder of ``kind``: 'train' or 'sample'."""
    return {"train": train_step_fn, "sample": sample_step_fn}[kind]
