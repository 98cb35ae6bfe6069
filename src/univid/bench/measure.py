"""How the bench measures: clocks, peak memory, the device's peak FLOP/s, and :class:`Bench`,
which times one step and prints its JSON line.

- **Time**: median and min of timed runs after warm-up, synchronising CUDA around each.
- **Peak memory** = weights + optimizer state (counted from their tensors) + the most the step
  allocates above that. On CUDA the allocator's peak; on CPU the process's peak resident set
  (Linux VmHWM, reset before each step through /proc/self/clear_refs), with glibc told to give
  large blocks back to the system so the resident set follows live tensors.
- **FLOPs** are counted with ``torch.utils.flop_counter`` on the real step; **MFU** = FLOPs /
  (time x peak), the peak measured on the spot with a large matmul on CPU, or the device's
  datasheet dense bf16/fp32 peak on known GPUs (measured otherwise).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from univid import speed
from univid.bench.steps import Runner, Shape, make_inputs, step_fn
from univid.device import cpu_flags, precision_name
from univid.errors import InputError
from univid.info import flops_of
from univid.parallel import local

# Dense peak FLOP/s from the datasheets (SXM parts), by dtype; other GPUs are measured.
GPU_PEAKS = {
    "H100": {torch.bfloat16: 989e12, torch.float32: 67e12},
    "H200": {torch.bfloat16: 989e12, torch.float32: 67e12},
    "A100": {torch.bfloat16: 312e12, torch.float32: 19.5e12},
}
MB = 2**20
T = TypeVar("T")

# --- clocks ---------------------------------------------------------------------------------


def now(device: torch.device | None = None) -> float:
    """``time.perf_counter()`` after the device's queued work is done."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def time_once(fn: Callable[[], T], device: torch.device | None = None) -> tuple[T, float]:
    """``fn()`` and the seconds it took."""
    start = now(device)
    out = fn()
    return out, now(device) - start


def timed(
    fn: Callable[[], object], repeats: int, warmup: int, device: torch.device | None = None
) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return [time_once(fn, device)[1] for _ in range(repeats)]


def alternate(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device | None = None
) -> dict[str, list[float]]:
    """Seconds of each function, called in turn ``repeats`` times: drifts in the machine's
    speed hit them all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_once(fn, device)[1])
    return times


def time_stats(times: list[float]) -> dict[str, float | int]:
    """Median, min and count of timed runs, as the bench's rows name them."""
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


def device_peak(device: torch.device, dtype: torch.dtype, n: int = 4096) -> tuple[float, str]:
    """Peak FLOP/s for ``dtype``: datasheet for known GPUs, else the best of timed n x n matmuls."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAKS.items():
            if key in name and dtype in peaks:
                return peaks[dtype], f"datasheet ({name})"
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = min(timed(lambda: a @ b, repeats=6, warmup=0, device=device))
    return 2 * n**3 / best, f"measured ({n}x{n} matmul, best of 6)"


def host() -> dict:
    """torch version, CPU, its flags, torch threads and the CPU's vector capability."""
    return {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
        "threads": torch.get_num_threads(),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


def environment(device: torch.device) -> dict:
    """The bench's first row: :func:`host`, the device and diffusers' version if installed."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    env = {"bench": "environment", "torch": torch.__version__, "device": name, **host()}
    try:
        import diffusers

        env["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    return env


# --- memory -------------------------------------------------------------------------------


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018  (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


def malloc_mode(measuring: bool) -> None:
    """glibc: while measuring memory, serve blocks >= 1 MiB by mmap and trim what is freed, so
    the resident set follows live tensors; while timing, keep freed blocks (threshold 32 MiB,
    the most glibc's own adaptive threshold reaches) so steps do not pay for page faults."""
    libc = _libc()
    if libc is not None:
        size = 1 << 20 if measuring else 32 << 20
        libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, size if measuring else 64 << 20)  # M_TRIM_THRESHOLD


def _status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field_name} in /proc/self/status")


@contextlib.contextmanager
def step_peak(device: torch.device) -> Iterator[dict]:
    """Measures the most memory the block allocates above what was resident when it began."""
    out: dict = {}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out["step_peak_mb"] = (torch.cuda.max_memory_allocated(device) - before) / MB
        return
    malloc_mode(measuring=True)
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    try:
        before = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        before = None
    try:
        yield out
    finally:
        malloc_mode(measuring=False)
    out["step_peak_mb"] = None if before is None else (_status_kb("VmHWM") - before) / 1024


def tensor_mb(tensors: Iterable[torch.Tensor | None]) -> float:
    """MiB of distinct tensors (shared storage counted once, a DTensor by this rank's shard);
    what is not a tensor (a missing gradient, a step count) counts nothing."""
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            t = local(t)
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return total / MB


def state_tensors(
    model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> Iterator[torch.Tensor]:
    """Weights, buffers and the optimizer's per-parameter state (not its scalar step counts)."""
    yield from model.parameters()
    yield from model.buffers()
    if optimizer is not None:
        for state in optimizer.state.values():
            yield from (v for v in state.values() if isinstance(v, torch.Tensor) and v.ndim)


# --- one measurement ----------------------------------------------------------------------


@dataclass
class Bench:
    """Shared settings of a bench run; ``emit`` prints a JSON line and keeps it for the report."""

    device: torch.device
    repeats: int
    warmup: int
    rows: list[dict] = field(default_factory=list)
    peaks: dict = field(default_factory=dict)

    def peak(self, dtype: torch.dtype) -> tuple[float, str]:
        if dtype not in self.peaks:
            self.peaks[dtype] = device_peak(self.device, dtype)
        return self.peaks[dtype]

    def emit(self, row: dict) -> dict:
        row = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}
        print(json.dumps(row), flush=True)
        self.rows.append(row)
        return row

    def measure(
        self,
        kind: str,
        runner: Runner,
        shape: Shape,
        amp: torch.dtype | None = None,
        backend: str = "auto",
        repeats: int | None = None,
        flops: bool = True,
        label: str | None = None,
        **extra: object,
    ) -> dict:
        """Time, memory, FLOPs and MFU of one step kind ('train' or 'sample') of ``runner``."""
        step, optimizer = step_fn(kind)(runner, make_inputs(shape, self.device), self.device, amp)
        row = {
            "bench": label or f"{kind}_step",
            "model": runner.name,
            **runner.settings,
            "attention": backend,
            "precision": precision_name(amp),
            "batch": shape.batch,
            "tokens": shape.tokens,
            "video_tokens": shape.video_tokens,
            "text_len": shape.text_len,
            **extra,
        }
        try:
            with speed.attention(runner.model, backend):
                # The first call compiles and allocates the optimizer state.
                row["first_step_s"] = time_once(step, self.device)[1]
                times = timed(step, repeats or self.repeats, self.warmup - 1, self.device)
                with step_peak(self.device) as mem:
                    step()
                counted = flops_of(step) if flops else None
        except (RuntimeError, InputError) as exc:  # e.g. a kernel that cannot take the inputs
            return self.emit({**row, "error": " ".join(str(exc).split())[:200]})
        row.update(time_stats(times))
        state = tensor_mb(state_tensors(runner.model, optimizer))
        tokens = shape.batch * shape.tokens * (2 if kind == "sample" else 1)
        row.update(
            tokens_per_s=tokens / row["median_s"],
            state_mb=state,
            peak_mb=None if mem["step_peak_mb"] is None else state + mem["step_peak_mb"],
        )
        if counted:
            row.update(self._utilisation(counted, row["median_s"], amp or torch.float32))
        return self.emit(row)

    def _utilisation(self, flops: int, seconds: float, dtype: torch.dtype) -> dict:
        peak_flops, peak_source = self.peak(dtype)
        return {
            "flops": flops,
            "gflop": flops / 1e9,
            "achieved_tflops": flops / seconds / 1e12,
            "mfu": flops / seconds / peak_flops,
            "device_peak_tflops": peak_flops / 1e12,
            "peak_source": peak_source,
        }
