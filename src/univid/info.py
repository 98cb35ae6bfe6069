"""Parameters and FLOPs of a configured model, counted with ``torch.utils.flop_counter``.

The count runs the real forward (and, for a training step, backward) on the meta device, so even
the XL size is counted in a second without allocating its weights. ``closed_form_flops`` is the
textbook estimate the count is checked against: 2 FLOPs per token-wise weight per token, plus
4 N^2 D per layer for the two attention matmuls.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from univid.build import build_model
from univid.config import Config
from univid.limits import TOKENS

# Weights used once per sample (time and caption conditioning, adaLN modulation) or not by a
# matmul (modality embeddings); everything else multiplies every token.
PER_SAMPLE = ("time_embed", "text_pool", "modulation", "modality")


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# The CPU flash-attention kernels are missing from flop_counter's table; same formula as CUDA.
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Total parameters, those that act on every token, and those in adaLN modulation."""
    total = sum(p.numel() for p in model.parameters())
    per_token = sum(
        p.numel()
        for name, p in model.named_parameters()
        if p.ndim == 2 and not any(part in name for part in PER_SAMPLE)
    )
    modulation = sum(p.numel() for n, p in model.named_parameters() if "modulation" in n)
    modulation += sum(p.numel() for n, p in model.named_parameters() if n.endswith("offset"))
    return {"total": total, "per_token": per_token, "modulation": modulation}


def sequence_length(cfg: Config, frames: int, height: int, width: int, text_len: int) -> int:
    """Tokens in the single stream: video patches + text (+ the encoder's time token)."""
    video = math.prod(n // p for n, p in zip((frames, height, width), cfg.model.patch))
    return video + text_len + (1 if cfg.model.backbone == "encoder" else 0)


def _inputs(cfg: Config, shape: tuple[int, int, int], text_len: int, batch: int, device):
    frames, height, width = shape
    x = torch.zeros(batch, cfg.model.in_channels, frames, height, width, device=device)
    text = torch.zeros(batch, text_len, cfg.model.text_dim, device=device)
    mask = torch.ones(batch, text_len, dtype=torch.bool, device=device)
    return x, torch.full((batch,), 0.5, device=device), text, mask


def flops_of(fn: Callable[[], object]) -> int:
    """FLOPs of whatever ``fn`` runs, counted by ``torch.utils.flop_counter`` (CPU attention
    kernels included)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        fn()
    return counter.get_total_flops()


def count_flops(
    cfg: Config,
    frames: int,
    height: int,
    width: int,
    text_len: int,
    batch: int = 1,
    backward: bool = False,
    device: str | torch.device = "meta",
) -> int:
    """FLOPs of one forward (``backward=True``: forward + backward) of the model of ``cfg``."""
    with torch.device(device):
        model = build_model(cfg.model)
    # Train mode keeps nn.TransformerEncoder off its fused inference kernel, which the counter
    # cannot see into; without dropout the forward computes the same thing.
    model.train()
    x, t, text, mask = _inputs(cfg, (frames, height, width), text_len, batch, device)

    def run() -> None:
        out = model(x, t, text, mask)
        if backward:
            out.float().pow(2).mean().backward()

    return flops_of(run)


def closed_form_flops(cfg: Config, frames: int, height: int, width: int, text_len: int) -> int:
    """2 * token-wise params * N + 4 * depth * N^2 * D for one sample's forward."""
    with torch.device("meta"):
        per_token = parameter_counts(build_model(cfg.model))["per_token"]
    n = sequence_length(cfg, frames, height, width, text_len)
    return 2 * per_token * n + 4 * cfg.model.depth * n * n * cfg.model.width


def describe(cfg: Config, frames: int, height: int, width: int, text_len: int) -> dict:
    """What ``univid info`` prints: sizes, tokens and FLOPs of one sample."""
    TOKENS.check("the tokens of one clip", sequence_length(cfg, frames, height, width, text_len))
    with torch.device("meta"):
        params = parameter_counts(build_model(cfg.model))
    forward = count_flops(cfg, frames, height, width, text_len)
    m = cfg.model
    return {
        "backbone": m.backbone if m.backbone == "encoder" else f"dit ({m.adaln} adaLN)",
        "width": m.width,
        "depth": m.depth,
        "heads": m.heads,
        "patch": list(m.patch),
        "video": [frames, height, width],
        "text_tokens": text_len,
        "tokens": sequence_length(cfg, frames, height, width, text_len),
        "params": params["total"],
        "params_modulation": params["modulation"],
        "forward_flops": forward,
        "closed_form_flops": closed_form_flops(cfg, frames, height, width, text_len),
        "train_step_flops": count_flops(cfg, frames, height, width, text_len, backward=True),
    }
