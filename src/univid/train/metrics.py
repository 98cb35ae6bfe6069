"""What a run writes as it goes: metrics.csv (and TensorBoard), and the run's log files."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch

from univid.errors import InputError
from univid.files import atomic_write, storage_error, writing

METRICS = [
    "step",
    "loss",
    "grad_norm",
    "lr",
    "steps_per_s",
    "elapsed_s",
    "val_loss",
    "val_loss_ema",
    "samples",
    "skipped",
    "nonfinite",
]
TENSORBOARD = [
    "loss",
    "grad_norm",
    "lr",
    "steps_per_s",
    "val_loss",
    "val_loss_ema",
    "skipped",
    "nonfinite",
]


def append_log(run_dir: Path, name: str, lines: list[str]) -> None:
    """Append lines to a log file of the run folder (each rank writes its own lines)."""
    if not lines:
        return
    with writing(run_dir / name):
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / name).open("a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)


HEADER = ",".join(METRICS)


def trim_metrics(path: Path, step: int) -> None:
    """Make metrics.csv fit to append to at ``step``: drop the rows a crashed attempt logged past
    ``step`` (the resumed run redoes them), a last row cut short (a crash or a full disk in the
    middle of a write), and put back a header that is missing or cut short."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    lines.pop()  # "" after the last complete line, or a line cut short
    header = lines[:1] if lines and lines[0].startswith("step,") else [HEADER]
    kept = [
        line
        for line in lines[1 if header == lines[:1] else 0 :]
        if _row_step(line) is not None and _row_step(line) <= step
    ]
    repaired = "".join(line + "\n" for line in header + kept)
    if repaired != text:
        atomic_write(path, lambda tmp: tmp.write_text(repaired, encoding="utf-8"))


def _row_step(line: str) -> int | None:
    """The step of a complete metrics row, or None for anything else."""
    fields = next(csv.reader([line]), [])
    try:
        return int(float(fields[0])) if len(fields) == len(METRICS) else None
    except (ValueError, IndexError):
        return None


class MetricsLogger:
    """metrics.csv always; TensorBoard too when it is installed."""

    def __init__(self, run_dir: Path) -> None:
        self.path = path = run_dir / "metrics.csv"
        new = not path.exists() or path.stat().st_size == 0
        self.file = path.open("a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, fieldnames=METRICS, restval="")
        if new:
            self.writer.writeheader()
            self.file.flush()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            self.tb = None

    def log(self, row: dict[str, float]) -> None:
        with writing(self.path):
            self.writer.writerow(row)
            self.file.flush()
        if self.tb is not None:
            for key in TENSORBOARD:
                if key in row:
                    self.tb.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:  # a row that could not be written has already failed the run: say it once
            pass
        if self.tb is not None:
            self.tb.close()


def start_run(run_dir: Path, config_json: str, step: int) -> MetricsLogger:
    """Write the run's config, drop metrics rows a crashed attempt logged past ``step``, and
    open metrics.csv for appending."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(
            run_dir / "config.json", lambda tmp: tmp.write_text(config_json, encoding="utf-8")
        )
        trim_metrics(run_dir / "metrics.csv", step)
        return MetricsLogger(run_dir)
    except OSError as exc:
        error = storage_error(exc)
        if error is not None:
            raise error from None
        raise InputError(f"cannot write the run folder {run_dir}: {exc.strerror}") from None


class Interval:
    """Loss and gradient norm summed on the device between metrics rows (read once per row)."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(2, device=device)  # loss, grad norm of the finite updates
        self.updates = 0  # finite updates, counted when the guard's flags are read
        self.start = self.last = time.perf_counter()

    def add(self, ok: torch.Tensor, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.sums += torch.where(ok, torch.stack([loss, grad_norm]), 0.0)

    def row(self, dist: Any, **counters: float) -> dict[str, float]:
        """The means since the last row (this rank's loss shares summed over ranks), the speed,
        and ``counters``; starts the next interval."""
        count, now = self.updates, time.perf_counter()
        means = self.sums / max(count, 1)
        means[0] = dist.sum(means[0])  # each rank holds its share of the mean loss
        loss, gnorm = means.tolist()
        row = {
            "step": counters.pop("step"),
            "loss": loss if count else float("nan"),
            "grad_norm": gnorm if count else float("nan"),
            "lr": counters.pop("lr"),
            "steps_per_s": count / (now - self.last),
            "elapsed_s": now - self.start,
            **counters,
        }
        self.sums.zero_()
        self.updates, self.last = 0, now
        return row
