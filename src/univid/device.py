"""Where a run computes and in which precision: device picking and autocast, in one place."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from univid.errors import InputError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""Storage dtypes of caches and exported weights, by name."""


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if name not in DEVICES:
        raise InputError(f"device '{name}' is unknown: one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


CPU_FLAGS_ENV = "UNIVID_CPU_FLAGS"
"""Stands in for the CPU's flags when set (space-separated; 'none' for no flags): to see what
``precision=auto`` does on another machine, and for tests."""


def cpu_flags() -> list[str]:
    """The CPU's matrix-unit and AVX-512 flags (bf16 speed depends on them; Linux only), or
    those of $UNIVID_CPU_FLAGS."""
    given = os.environ.get(CPU_FLAGS_ENV)
    if given is not None:
        line = given
    else:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
        line = next((ln for ln in text.splitlines() if ln.startswith("flags")), ":")
        line = line.split(":", 1)[1]
    return sorted(f for f in line.split() if f.startswith(("amx", "avx512")))


def bf16_units(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices faster than fp32 ones: CUDA with bf16, or a
    CPU with bf16 matrix units (Intel AMX, flag ``amx_bf16``; there a bf16 matmul runs 5-9x the
    fp32 rate, while without them bf16 is slower than fp32, see docs/performance.md)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and "amx_bf16" in cpu_flags()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where asked for, or for 'auto' where the device has bf16 matrix units
    (:func:`bf16_units`); None means fp32."""
    if precision not in PRECISIONS:
        raise InputError(f"precision '{precision}' is unknown: one of {', '.join(PRECISIONS)}")
    if precision == "bf16" or (precision == "auto" and bf16_units(device)):
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """'bf16' or 'fp32': the name of an autocast dtype of :func:`autocast_dtype`, as run folders,
    reports and bench rows record it."""
    return "fp32" if dtype is None else "bf16"


def precision_note(precision: str, device: torch.device) -> str:
    """One line saying which precision ``precision`` resolves to on ``device``, and why."""
    dtype = autocast_dtype(precision, device)
    name = "bf16 autocast" if dtype is not None else "fp32"
    if precision != "auto":
        return f"precision: {name} (asked for)"
    if device.type == "cpu":
        why = "has" if dtype is not None else "has no"
        return f"precision: {name} (auto: this CPU {why} bf16 matrix units, amx_bf16)"
    return f"precision: {name} (auto: {device.type})"


def autocast(
    device: torch.device, dtype: torch.dtype | None, enabled: bool = True
) -> torch.autocast:
    """Mixed precision in ``dtype`` on ``device``; a no-op when ``dtype`` is None (fp32)."""
    return torch.autocast(
        device.type, dtype=dtype or torch.float32, enabled=enabled and dtype is not None
    )
