"""Buckets: clips grouped by (frames, height, width), batched without padding.

A cache made by ``univid prepare`` puts each clip in the bucket whose aspect ratio is closest to
its source (videos in buckets of more than one frame that they are long enough for, images in
1-frame buckets). Training then draws every batch from one bucket, so the clips of a batch share
a shape, and a bucket's batch size can follow its token count so every batch has about the same
number of tokens (``data.tokens_per_batch``).

:class:`BucketSampler` is the bucketed counterpart of
:class:`univid.data.sampler.StreamSampler`: batch k of the run is a pure function of
(seed, k), so a resumed run needs only the number of batches consumed, and the ranks split each
global batch the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from univid.data import BadSample
from univid.errors import InputError

Bucket = tuple[int, int, int]  # (frames, height, width) in pixels


def bucket_name(bucket: Sequence[int]) -> str:
    """(8, 32, 48) -> '8x32x48'."""
    return "x".join(str(int(v)) for v in bucket)


def parse_buckets(text: str) -> list[Bucket]:
    """'8x32x32,16x32x48,1x64x64' -> [(8, 32, 32), (16, 32, 48), (1, 64, 64)]."""
    buckets = []
    for part in (p.strip() for p in text.split(",")):
        values = part.lower().split("x")
        try:
            bucket = tuple(int(v) for v in values)
        except ValueError:
            bucket = ()
        if len(bucket) != 3 or min(bucket) < 1:
            raise InputError(
                f"bucket {part!r} must be FRAMESxHEIGHTxWIDTH with positive integers, like 8x32x48"
            )
        buckets.append(bucket)
    if not buckets:
        raise InputError("no buckets given")
    return sorted(set(buckets))


def available_frames(duration: float, frames: int, fps: float, stride: int) -> int:
    """Frames a clip of the source can have: every ``stride``-th frame, or by time at ``fps``."""
    if stride:
        return (frames + stride - 1) // stride
    return int(math.floor(duration * fps + 1e-6))


def choose_bucket(
    kind: str, width: int, height: int, frames: int, buckets: Sequence[Bucket]
) -> Bucket:
    """The bucket for a source of ``width`` x ``height`` with ``frames`` usable frames.

    Images take 1-frame buckets (or a 1-frame version of a video bucket when there is none);
    videos take buckets of more than one frame that they are long enough for. Among those the
    closest aspect ratio wins, then the most frames, then the largest area."""
    aspect = math.log(width / height)
    if kind == "image":
        stills = [b for b in buckets if b[0] == 1] or [(1, b[1], b[2]) for b in buckets]
        candidates = stills
    else:
        moving = [b for b in buckets if b[0] > 1]
        candidates = [b for b in moving if b[0] <= frames]
        if not candidates:
            need = min((b[0] for b in moving), default=2)
            raise BadSample(
                f"too short: has {frames} frame{'' if frames == 1 else 's'} at the clip rate, "
                f"the shortest bucket needs {need}"
            )
    return min(candidates, key=lambda b: (abs(math.log(b[2] / b[1]) - aspect), -b[0], -b[1] * b[2]))


class BucketSampler:
    """Global batches drawn from one bucket at a time, seeded and resumable.

    Epoch e permutes each bucket (seed, e), cuts it into global batches of that bucket's size
    (the last one wraps around to the bucket's first clips, so no clip is dropped), and shuffles
    the order of all batches. ``global_batch[b]`` is the batch size of bucket b over all ranks
    and accumulation steps; it should be a multiple of ranks x accumulation steps."""

    def __init__(
        self, buckets: dict[Bucket, list[int]], global_batch: dict[Bucket, int], seed: int = 0
    ) -> None:
        self.buckets = {b: list(ix) for b, ix in sorted(buckets.items()) if ix}
        if not self.buckets:
            raise ValueError("cannot sample from an empty dataset (no clips in any bucket)")
        self.sizes = {b: global_batch[b] for b in self.buckets}
        self.seed = seed
        self.per_epoch = sum(math.ceil(len(ix) / self.sizes[b]) for b, ix in self.buckets.items())
        self._epoch: tuple[int, list[list[int]]] | None = None

    def _plan(self, epoch: int) -> list[list[int]]:
        if self._epoch is not None and self._epoch[0] == epoch:
            return self._epoch[1]
        batches = []
        for k, (bucket, indices) in enumerate(self.buckets.items()):
            rng = np.random.default_rng([self.seed, epoch, k, 11])
            order = [indices[i] for i in rng.permutation(len(indices))]
            size = self.sizes[bucket]
            for start in range(0, len(order), size):
                batch = order[start : start + size]
                while len(batch) < size:  # wrap around: a small bucket repeats clips
                    batch += order[: size - len(batch)]
                batches.append(batch)
        rng = np.random.default_rng([self.seed, epoch, 13])
        plan = [batches[i] for i in rng.permutation(len(batches))]
        self._epoch = (epoch, plan)
        return plan

    def batch(self, k: int) -> list[int]:
        """Dataset indices of global batch ``k`` of the run."""
        return list(self._plan(k // self.per_epoch)[k % self.per_epoch])
