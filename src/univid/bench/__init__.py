"""`univid bench`: speed and memory of the model's training and sampling steps, as JSON lines.

Every measurement is one JSON line on stdout: a train step or a sampling step on synthetic inputs
of the configured size; median and min of timed runs after warm-up, tokens/s, peak memory, MFU.

- ``settings``: :class:`BenchSettings`, what a run measures, and the allowed values (no torch).
- ``steps``: the model behind one interface, synthetic inputs, the train and sampling steps.
- ``measure``: clocks, peak memory, device peak FLOP/s, and ``Bench`` (one row per step).
- ``versus``: ``--vs diffusers``, the same steps on diffusers' CogVideoX transformer.
- ``suites``: the suites and :func:`run_bench`.
- ``report``: Markdown tables and the token-sweep plot.

``from univid.bench import run_bench`` imports torch only when ``run_bench`` is looked up, so the
command line can read the settings' allowed values without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from univid.bench.settings import DEFAULT_SUITES, SUITES, VERSUS, BenchSettings

if TYPE_CHECKING:
    from univid.bench.suites import run_bench

__all__ = ["DEFAULT_SUITES", "SUITES", "VERSUS", "BenchSettings", "run_bench"]


def __getattr__(name: str) -> object:
    if name == "run_bench":
        from univid.bench.suites import run_bench

        return run_bench
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
