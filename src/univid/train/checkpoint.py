"""Crash-safe checkpoints.

A checkpoint is a folder ``checkpoints/step_XXXXXXXX`` holding

    model.safetensors   raw weights            ema.safetensors   EMA weights
    trainer.pt          optimizer + LR state   config.json       the run's config
    COMPLETE            written last

It is written under a temporary name, flushed to disk, then renamed, so a crash never leaves a
half checkpoint under a real name; older checkpoints are deleted only after the new one is
complete. The run folder also gets ``model.safetensors`` (EMA) + ``config.json`` so that
``univid generate --model RUN_DIR`` works at any time.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from univid.errors import InputError

MARKER = "COMPLETE"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)``, fsync, and rename onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    _fsync(tmp)
    os.replace(tmp, path)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config_json: str,
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` atomically, refresh the run's exported weights, prune old ones."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_weights(model), tmp / "model.safetensors")
    save_file(_weights(ema), tmp / "ema.safetensors")
    trainer = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    torch.save(trainer, tmp / "trainer.pt")
    (tmp / "config.json").write_text(config_json, encoding="utf-8")
    for f in tmp.iterdir():
        _fsync(f)
    (tmp / MARKER).write_text(str(step), encoding="utf-8")
    _fsync(tmp / MARKER)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)

    atomic_write(run_dir / "model.safetensors", lambda p: save_file(_weights(ema), p))
    atomic_write(run_dir / "config.json", lambda p: p.write_text(config_json, encoding="utf-8"))
    for old in complete_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old)
    return final


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints that carry the completion marker, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if (p / MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(
    path: Path,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> int:
    """Restore everything saved by :func:`save_checkpoint`; returns the step to continue from."""
    for name in ("model.safetensors", "ema.safetensors", "trainer.pt"):
        if not (path / name).is_file():
            raise InputError(f"checkpoint {path} is missing {name}")
    model.load_state_dict(load_file(path / "model.safetensors"))
    ema.load_state_dict(load_file(path / "ema.safetensors"))
    # Optimizer state is plain tensors and numbers: never unpickle arbitrary objects.
    trainer = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    return int(trainer["step"])
