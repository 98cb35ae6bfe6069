"""Will it fit? The memory a training run or a generation needs, estimated before anything is
allocated, against what the machine has free.

A size can be in range (:data:`univid.config.sections.RANGES`) and still not fit: ``model.width
=65536`` is 17 GB of weights before the optimizer, a long ``data.frames`` makes every step's
activations grow. Without a check the run allocates until the OS kills it, or dies minutes in.

The estimate counts, in bytes:

- training: the weights and their gradients, AdamW's two moments, the EMA copy, the update
  guard's copy of weights and moments (when ``train.max_nonfinite`` > 0), and the activations of
  one micro-batch's forward and backward (per block: a fixed number of (tokens x width) and
  (tokens x mlp hidden) tensors; the flash and memory-efficient attention kernels never hold the
  (tokens x tokens) scores, so they are not counted: ``attention='naive'`` needs more); the
  validation and sample batches run without gradients and need less than a training micro-batch
  of the same size;
- generation: the activations of one forward of the sampling batch, doubled by guidance, plus
  the sampler's state and the decoded video (the weights are already loaded by then).

It is meant to be conservative within a small factor (tests compare it with measured peaks).
``UNIVID_SKIP_MEMORY_CHECK=1`` turns the refusal off, e.g. on machines with swap or when the
available memory is misreported (containers without their own /proc/meminfo).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from univid.autoencoder import BUILTIN_RATIOS
from univid.build import build_model
from univid.config import Config, ModelConfig, replace
from univid.errors import InputError

SKIP_ENV = "UNIVID_SKIP_MEMORY_CHECK"
FLOAT = 4  # bytes: weights, optimizer state and activations are fp32 (autocast only shrinks)
# Stored (tokens x width) tensors per block in training: norms, q, k, v, attention output and
# projection, modulated inputs, residuals and their gradients.
PER_BLOCK_WIDTH = 28
# Stored (tokens x mlp hidden) tensors per block: the first linear's output, its activation and
# their gradients.
PER_BLOCK_HIDDEN = 4
# The process's other needs: text encoder, libraries' workspaces, allocator slack.
BASE = 512 * 2**20


@dataclass(frozen=True)
class Estimate:
    """Bytes a job needs, by part."""

    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of the model of ``cfg``, from two one- and two-block models on the meta
    device (a thousand-block model is never built, not even on meta)."""
    with torch.device("meta"):
        one, two = (
            sum(p.numel() for p in build_model(replace(cfg, depth=d)).parameters()) for d in (1, 2)
        )
    return one + (cfg.depth - 1) * (two - one)


def tokens(cfg: Config, frames: int, height: int, width: int) -> tuple[int, int]:
    """(video tokens, tokens of the stream) of one clip of the given pixel-space shape; latent
    autoencoders shrink the video first (a built-in one by its known ratios, a diffusers folder
    at most 4x in time and 8x in space)."""
    m = cfg.model
    temporal, spatial = BUILTIN_RATIOS.get(cfg.data.autoencoder, (4, 8))
    if (temporal, spatial) != (1, 1):
        frames = max(1, frames // temporal)
        height, width = max(1, height // spatial), max(1, width // spatial)
    video = math.prod(max(1, n // p) for n, p in zip((frames, height, width), m.patch))
    return video, video + cfg.text.max_length + 1


def activations(cfg: Config, batch: int, grad: bool) -> int:
    """Bytes of the activations of one forward (and backward when ``grad``) of ``batch``
    clips of the config's data shape."""
    m, d = cfg.model, cfg.data
    _, n = tokens(cfg, d.frames, d.height, d.width)
    hidden = int(m.mlp_ratio * m.width)
    per_block = n * (PER_BLOCK_WIDTH * m.width + PER_BLOCK_HIDDEN * hidden)
    if grad:  # every block's tensors are kept for the backward pass (one block's, recomputed)
        kept = 2 if cfg.train.activation_checkpointing else m.depth
    else:  # without gradients a block's tensors are freed as soon as it has run
        kept = 1
    return FLOAT * batch * kept * per_block


def clip_bytes(cfg: Config, batch: int) -> int:
    """A batch of clips in the model's space (pixels or latents), fp32."""
    d = cfg.data
    return FLOAT * batch * cfg.model.in_channels * d.frames * d.height * d.width


def training(cfg: Config, world: int = 1) -> Estimate:
    """What one rank of a training run of ``cfg`` needs at its peak."""
    t, d = cfg.train, cfg.data
    params = FLOAT * parameter_count(cfg.model)
    # weights, gradients, two AdamW moments, EMA; the guard keeps weights and moments again
    state = params * (5 + (3 if t.max_nonfinite > 0 else 0))
    if cfg.parallel.mode == "fsdp":
        state //= world
    micro = t.batch_size
    if d.tokens_per_batch:
        micro = max(micro, d.tokens_per_batch // tokens(cfg, d.frames, d.height, d.width)[0])
    extras = max(
        activations(cfg, min(t.val_clips, 32), grad=False) if t.val_every else 0,
        activations(cfg, 8, grad=False) if t.sample_every else 0,  # 4 prompts x guidance
    )
    return Estimate(
        {
            "weights and optimizer": state,
            "activations": activations(cfg, micro, grad=True),
            "batches": 3 * clip_bytes(cfg, micro) + 3 * clip_bytes(cfg, t.val_clips),
            "validation and samples": extras,
            "base": BASE,
        }
    )


def generation(cfg: Config, videos: int, weights: bool = False) -> Estimate:
    """What sampling ``videos`` videos at once needs; ``weights`` adds the model itself."""
    d = cfg.data
    guided = 2 * videos  # classifier-free guidance runs the conditional and the null batch
    parts = {
        "activations": activations(cfg, guided, grad=False),
        "sampler state": 4 * clip_bytes(cfg, guided),
        "videos": videos * d.frames * d.height * d.width * (3 * FLOAT + 3),
        "base": BASE,
    }
    if weights:
        parts["weights"] = FLOAT * parameter_count(cfg.model)
    return Estimate(parts)


def available(device: torch.device) -> int | None:
    """Bytes free on ``device`` (CUDA: the device's free memory; CPU: the OS's MemAvailable),
    or None where it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**27 else f"{n / 2**20:.0f} MB"


def check_fits(estimate: Estimate, device: torch.device, what: str) -> None:
    """Refuse, with one line, a job whose estimate exceeds the free memory of ``device``."""
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return
    free = available(torch.device(device))
    if free is None or estimate.total <= free:
        return
    biggest = max(estimate.parts, key=estimate.parts.get)
    raise InputError(
        f"{what} needs about {gb(estimate.total)} of memory ({biggest}: "
        f"{gb(estimate.parts[biggest])}) but {device} has {gb(free)} available; use a smaller "
        f"model, batch or video (set {SKIP_ENV}=1 to try anyway)"
    )
