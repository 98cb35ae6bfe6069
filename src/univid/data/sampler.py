"""Which samples each rank trains on: a seeded, resumable, world-size-independent stream.

Training reads one global stream of sample indices. Position p of the stream is a pure function
of (seed, p): for a dataset of N items, position p lies in epoch p // N and takes item
``perm_e[p % N]`` of that epoch's seeded permutation; an unbounded dataset (the shapes world)
uses p itself. Optimizer step s covers positions [start_s, start_s + G), G the global batch,
and each rank takes a fixed slice of them. Hence

- the global batch of a step does not depend on how many ranks share it, so 1 rank with batch G
  and 2 ranks with batch G/2 see the same samples;
- resuming needs only the number of samples consumed so far, also across a change of world size;
- no position is read twice or skipped, and every rank takes the same number of steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StreamSampler:
    """The global sample stream of a run and its split over ranks and micro-batches."""

    size: int | None
    """Dataset length, or None for an unbounded, index-addressable dataset."""
    seed: int = 0
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.size is not None and self.size <= 0:
            raise ValueError(f"cannot sample from an empty dataset (size {self.size})")

    def _permutation(self, epoch: int) -> np.ndarray:
        assert self.size is not None
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, epoch, 7]).permutation(self.size)

    def indices(self, positions: range) -> list[int]:
        """Dataset indices at stream ``positions``."""
        if self.size is None:
            return list(positions)
        out, cache = [], {}
        for p in positions:
            epoch = p // self.size
            if epoch not in cache:
                cache[epoch] = self._permutation(epoch)
            out.append(int(cache[epoch][p % self.size]))
        return out

    @staticmethod
    def positions(
        start: int, per_rank: int, rank: int, world: int, micro: int = 0, accum: int = 1
    ) -> range:
        """Stream positions of micro-batch ``micro`` of ``rank`` in the step that begins at
        ``start``; ranks own contiguous slices of ``per_rank * accum`` positions."""
        if not (0 <= rank < world and 0 <= micro < accum):
            raise ValueError(f"rank {rank}/{world}, micro-batch {micro}/{accum} out of range")
        first = start + (rank * accum + micro) * per_rank
        return range(first, first + per_rank)
