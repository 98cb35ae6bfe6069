"""A TeaCache-style step cache: skip the transformer blocks on steps where their input barely moved.

Along a sampling trajectory the blocks' input changes little between neighbouring steps, and so
does what the blocks add to it (the residual ``out - in``). The cache watches a cheap probe, the
first block's modulated input, and accumulates its relative L1 change from step to step:

    change_i = mean |probe_i - probe_{i-1}| / mean |probe_{i-1}|

While the running sum stays below ``threshold`` the blocks are skipped and the last residual is
added instead; once it passes the threshold the blocks run, the residual is refreshed and the sum
restarts at zero. ``threshold=0`` never skips. The first call always runs the blocks.

Deciding needs the change on the host, so a cached forward costs one device sync; the cache is for
sampling only (it keeps no graph and must not be used in training).

The model knows nothing of the cache: :func:`step_cache` stands :class:`CachedBlocks` in for the
DiT's stack of blocks for the length of a ``with`` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from univid.errors import InputError
from univid.model.dit import DiTBlocks, modulate


class StepCache:
    """State of one sampling run; make a new one (or :meth:`reset`) for every run."""

    def __init__(self, threshold: float) -> None:
        if threshold < 0:
            raise ValueError(f"step cache threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Forget the previous run: the next call runs the blocks."""
        self.previous: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None
        self.accumulated = 0.0
        self.calls = 0
        self.skipped = 0

    def should_skip(self, probe: torch.Tensor) -> bool:
        """Record this step's probe and say whether the cached residual may stand in."""
        probe = probe.detach()
        previous, self.previous = self.previous, probe
        self.calls += 1
        compatible = (
            previous is not None
            and self.residual is not None
            and previous.shape == probe.shape
            and self.residual.shape[0] == probe.shape[0]
        )
        if not compatible:
            return False
        change = (probe - previous).abs().mean() / previous.abs().mean().clamp_min(1e-12)
        self.accumulated += float(change)
        if self.accumulated < self.threshold:
            self.skipped += 1
            return True
        self.accumulated = 0.0
        return False

    def store(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """Keep what the blocks added on a step that ran them."""
        self.residual = (after - before).detach()

    @property
    def computed(self) -> int:
        """Calls that ran the blocks."""
        return self.calls - self.skipped


class CachedBlocks(DiTBlocks):
    """The same blocks (the same modules, so the same weights and names), run through a
    :class:`StepCache`: skipped while the probe barely moved, the last residual added instead."""

    def __init__(self, blocks: nn.ModuleList, cache: StepCache) -> None:
        super().__init__(blocks)
        self.cache = cache

    def probe(self, seq: torch.Tensor, cond: torch.Tensor, text_len: int) -> torch.Tensor:
        """The first block's modulated input of the attention."""
        first = self[0]
        shift, scale = first.modulation_of(cond).unbind(dim=-2)[:2]
        return modulate(first.norm1(seq), shift, scale, text_len)

    def forward(
        self,
        seq: torch.Tensor,
        cond: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        text_len: int = 0,
        past: list | None = None,
        keep: list | None = None,
    ) -> torch.Tensor:
        if past is not None or keep is not None:
            raise ValueError("the step cache does not combine with a KV cache")
        if self.cache.should_skip(self.probe(seq, cond, text_len)):
            return seq + self.cache.residual
        out = super().forward(seq, cond, rope, mask, text_len)
        self.cache.store(seq, out)
        return out


@contextlib.contextmanager
def step_cache(model: nn.Module, cache: StepCache | None) -> Iterator[None]:
    """Run ``model`` (a DiT) with ``cache`` inside the ``with`` block; None does nothing."""
    if cache is None:
        yield
        return
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, DiTBlocks):
        raise InputError("the step cache needs the dit backbone; this model has none")
    model.blocks = CachedBlocks(blocks, cache)
    try:
        yield
    finally:
        model.blocks = blocks
