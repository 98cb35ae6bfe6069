"""What a run writes as it goes: metrics.csv (and TensorBoard), and the run's log files."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch

from univid.errors import InputError
from univid.files import atomic_write

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
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / name).open("a", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def trim_metrics(path: Path, step: int) -> None:
    """Drop the rows after ``step``: a crashed attempt logged them, the resumed run redoes them."""
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
    if len(kept) < len(rows):

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(kept)

        atomic_write(path, write)


class MetricsLogger:
    """metrics.csv always; TensorBoard too when it is installed."""

    def __init__(self, run_dir: Path) -> None:
        path = run_dir / "metrics.csv"
        new = not path.exists()
        self.file = path.open("a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, fieldnames=METRICS, restval="")
        if new:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            self.tb = None

    def log(self, row: dict[str, float]) -> None:
        self.writer.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for key in TENSORBOARD:
                if key in row:
                    self.tb.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def start_run(run_dir: Path, config_json: str, step: int) -> MetricsLogger:
    """Write the run's config, drop metrics rows a crashed attempt logged past ``step``, and
    open metrics.csv for appending."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config_json, encoding="utf-8")
        trim_metrics(run_dir / "metrics.csv", step)
    except OSError as exc:
        raise InputError(f"cannot write the run folder {run_dir}: {exc.strerror}") from None
    return MetricsLogger(run_dir)


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
