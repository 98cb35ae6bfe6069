"""Time of one training step as ``univid train`` runs it, per step, as one JSON line.

    python benchmarks/train_step.py [--preset shapes-tiny] [--repeats 10] [--block 5]

Steps are timed in blocks of ``--block`` steps, each block ending with the read-back of the
loss and the guards' flags that ``Trainer.run`` makes at its logging interval; the figure is
the median over ``--repeats`` blocks after two untimed ones. It also runs against older
versions of univid, whose ``Trainer.train_step`` read its flags back at every step, so that a
before/after pair can be timed in one session (alternate the two, as ``farm-bench`` does).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from univid.config import resolve_config
from univid.device import cpu_flags
from univid.train.loop import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes-tiny")
    parser.add_argument("--repeats", type=int, default=10, help="timed blocks")
    parser.add_argument("--block", type=int, default=5, help="steps per block")
    args = parser.parse_args()
    cfg = resolve_config(args.preset, ["train.device=cpu", "train.val_every=0"])
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir), progress=False)
        deferred = hasattr(trainer, "update")
        step = trainer.update if deferred else trainer.train_step
        read = trainer.settle if deferred else (lambda: None)
        times = []
        for block in range(args.repeats + 2):
            start = time.perf_counter()
            for _ in range(args.block):
                step()
            read()
            if block >= 2:
                times.append((time.perf_counter() - start) / args.block)
        if hasattr(trainer, "close"):
            trainer.close()
    print(
        json.dumps(
            {
                "bench": "train_step",
                "preset": args.preset,
                "loop": "update+settle" if deferred else "train_step",
                "median_s": round(statistics.median(times), 4),
                "min_s": round(min(times), 4),
                "max_s": round(max(times), 4),
                "blocks": args.repeats,
                "steps_per_block": args.block,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(),
                "cpu_flags": cpu_flags(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
