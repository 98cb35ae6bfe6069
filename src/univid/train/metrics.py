"""What a run writes as it goes: metrics.csv (and TensorBoard), and the run's log files."""

from __future__ import annotations

import csv
from pathlib import Path

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
