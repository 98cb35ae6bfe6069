"""The allowed range of every number a user gives: config keys, command-line options and the
arguments of :class:`univid.pipeline.Pipeline`. Each range is defined once, here or (for config
keys) in :data:`univid.config.sections.RANGES`, and checked where the number enters.

Ceilings are generous, far above any real run; they keep typos (``2**64``, ``1e308``, ``nan``)
from reaching torch, numpy, ``timedelta`` or the GIF writer, which fail on them with tracebacks
or silently produce black videos. Whether a size that is in range fits the machine is judged
separately, by :mod:`univid.memory`. This module imports no torch.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from univid.errors import InputError


@dataclass(frozen=True)
class Range:
    """Numbers from ``lo`` to ``hi`` (both included unless ``lo_open``); ints unless
    ``real``. NaN and infinities are never in a range."""

    lo: float
    hi: float
    real: bool = False
    lo_open: bool = False

    def __contains__(self, value: object) -> bool:
        kind = numbers.Real if self.real else numbers.Integral  # numpy's numbers too
        if isinstance(value, bool) or not isinstance(value, kind):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        return above and value <= self.hi

    def describe(self) -> str:
        kind, lo, hi = (
            ("a number", f"{self.lo:g}", f"{self.hi:g}")
            if self.real
            else ("an integer", str(self.lo), str(self.hi))
        )
        return f"{kind} in {'(' if self.lo_open else '['}{lo}, {hi}]"

    def check(self, name: str, value: object, error: type[Exception] = InputError) -> object:
        """``value`` if it is in the range, else ``error`` naming ``name`` and the range."""
        if value not in self:
            raise error(f"{name} must be {self.describe()}, got {value!r}")
        return value


# Seeds of the noise and the data stream. torch.Generator takes [0, 2**64), but training mixes
# the seed with the stream position (seed * 1_000_003 + position), so 32 bits are what fits.
SEED = Range(0, 2**32 - 1)
# Tokens of one clip's stream (video patches + text): beyond this even counting FLOPs on the
# meta device overflows, and no machine holds the attention.
TOKENS = Range(1, 2**24)
# Videos of one `generate` call: one batch (the memory check judges whether it fits).
NUM_VIDEOS = Range(1, 4096)
# Frames of a streamed video (univid generate --frames): memory stays flat, so only time limits.
STREAM_FRAMES = Range(1, 10_000_000)
# Nearest-neighbour upscaling of written videos; the upscaled frame must also fit, see
# MAX_FRAME_SIDE.
SCALE = Range(1, 64)
# The TCP port `univid demo` listens on.
PORT = Range(1, 65_535)
# Longest side of a written frame in pixels (GIF and PNG store sizes in 16 bits).
MAX_FRAME_SIDE = 65_535
# Frames of a clip that `generate --video` continues (the model's frame count bounds it too).
KEEP = Range(1, 1_000_000)
# How strongly a LoRA adapter is applied (1 = as trained, 0 = the base; past 1 exaggerates it).
LORA_SCALE = Range(-100, 100, real=True)
# Seeds per prompt of `univid eval`.
EVAL_SEEDS = Range(1, 100_000)
# Videos per sampling batch of `univid eval`, clips encoded together by `univid prepare`.
BATCH = Range(1, 65_536)
# `univid prepare`: frame rate clips are resampled to, frame stride, window stride (clip frames
# between the starts of two windows of a video), clips per shard, and the
# largest source frame decoded (pixels).
PREPARE_FPS = Range(0, 1_000, real=True)
STRIDE = Range(0, 1_000_000)
WINDOW_STRIDE = Range(0, 1_000_000)
SHARD_SIZE = Range(1, 1_000_000)
SOURCE_PIXELS = Range(1, 2**31 - 1)
FRACTION = Range(0, 1, real=True)
# CPU threads for torch (0 = torch's default).
THREADS = Range(0, 256)
# `univid bench`: timed and untimed repetitions, largest sweep size, and the naive-attention
# sweep's memory ceiling in GB.
REPEATS = Range(1, 100_000)
SWEEP_TOKENS = Range(1, 2**24)
SWEEP_GB = Range(0, 1_000_000, real=True, lo_open=True)
