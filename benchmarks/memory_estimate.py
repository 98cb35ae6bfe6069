"""How close :mod:`univid.memory`'s estimate comes to the memory a job really takes, as JSON lines.

    python benchmarks/memory_estimate.py                      # the three recorded cases
    python benchmarks/memory_estimate.py --case train model.width=128 data.frames=16

Each case runs in a child process (one thread): a training run of the ``tiny`` preset with the
overrides, or a 2-step generation of 4 videos with an untrained model of that config. The small
case is compared on the whole process's peak RSS (its estimate is mostly the fixed ``BASE``); the
others on what the job added to the RSS it had before it started. ``ratio`` = estimate /
measured; ``tests/test_hostile_numbers.py`` requires 0.5-3 for the three cases below.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile

SMALL = ["train.steps=2", "train.val_every=0", "train.ckpt_every=2"]
MEDIUM = [
    "model.width=128",
    "model.heads=2",
    "data.frames=16",
    "data.height=64",
    "data.width=64",
    "train.batch_size=4",
]
CASES = [("train", SMALL), ("train", [*SMALL, *MEDIUM]), ("generate", MEDIUM)]


def rss(field: str = "VmRSS") -> int:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM), in bytes.

    The peak is read here, not from getrusage's ru_maxrss: Linux carries ru_maxrss across
    execve, so a child started by a big parent (a long pytest run) would report the parent's
    size as its own peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(kind: str, overrides: list[str]) -> dict:
    """Run the job here and return its estimate and measured memory (bytes)."""
    import torch

    from univid import memory
    from univid.config import resolve_config
    from univid.text import TextEncoder

    torch.set_num_threads(1)
    cfg = resolve_config("tiny", overrides)
    text = TextEncoder("minilm", cfg.text.max_length, torch.device("cpu"))
    if kind == "train":
        from univid.train.run import train

        base = rss()
        with tempfile.TemporaryDirectory() as folder:
            train(cfg, folder + "/run", progress=False)
        estimate = memory.training(cfg)
    else:
        from univid.build import build_model
        from univid.pipeline import Pipeline

        pipe = Pipeline(build_model(cfg.model), text, cfg)
        base = rss()
        pipe(["a red circle"] * 4, num_steps=2)
        estimate = memory.generation(cfg, 4)
    peak = rss("VmHWM")
    return {
        "measured": peak - base,
        "estimate": estimate.total - memory.BASE,
        "peak": peak,
        "total": estimate.total,
    }


def measure(kind: str, overrides: list[str]) -> dict:
    """One case, in a child process: the estimate, the measurement it is compared with, ratio."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    whole = "model.width=128" not in overrides  # the small case: whole-process peaks
    estimate, measured = (
        (got["total"], got["peak"]) if whole else (got["estimate"], got["measured"])
    )
    return {
        "kind": kind,
        "overrides": overrides,
        "compared": "whole process" if whole else "job's growth",
        "estimate_mb": round(estimate / 2**20),
        "measured_mb": round(measured / 2**20),
        "ratio": round(estimate / measured, 3),
        "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--case", nargs="+", metavar="KIND [KEY=VALUE ...]")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1:])))
        return
    cases = [(args.case[0], args.case[1:])] if args.case else CASES
    for kind, overrides in cases:
        print(json.dumps(measure(kind, overrides)), flush=True)


if __name__ == "__main__":
    main()
