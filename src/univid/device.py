"""Where a run computes and in which precision: device picking and autocast, in one place."""

from __future__ import annotations

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


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where asked for or where the device does it well ('auto' = CUDA with bf16)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision '{precision}' is unknown: one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(
    device: torch.device, dtype: torch.dtype | None, enabled: bool = True
) -> torch.autocast:
    """Mixed precision in ``dtype`` on ``device``; a no-op when ``dtype`` is None (fp32)."""
    return torch.autocast(
        device.type, dtype=dtype or torch.float32, enabled=enabled and dtype is not None
    )
