"""What each parallel mode costs per rank: weights, gradients, optimizer state, EMA, step time.

Run it once per mode, under torchrun for ddp and fsdp (it prints one JSON line from rank 0):

    python benchmarks/parallel_memory.py --preset S
    torchrun --standalone --nproc_per_node=2 benchmarks/parallel_memory.py --preset S --mode ddp
    torchrun --standalone --nproc_per_node=2 benchmarks/parallel_memory.py --preset S --mode fsdp

Byte counts are exact sums over this rank's tensors (a DTensor counts its local shard);
``peak_rss_mib`` is the process's peak resident memory as the OS reports it, which also holds
the text encoder, the Python runtime and activations.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
from pathlib import Path

import torch

from univid.bench.measure import tensor_mb, timed
from univid.config import resolve_config
from univid.parallel import close_distributed
from univid.train.loop import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="S")
    parser.add_argument("--mode", default="none", choices=["none", "ddp", "fsdp"])
    parser.add_argument("--batch-size", type=int, default=2, help="clips per rank")
    parser.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    overrides = [f"parallel.mode={args.mode}", f"train.batch_size={args.batch_size}"]
    cfg = resolve_config(args.preset, [*overrides, "train.device=cpu", *args.overrides])
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir), progress=False)
        times = timed(trainer.train_step, args.steps, warmup=1)
        params = list(trainer.model.parameters())
        optim = [v for s in trainer.optimizer.state.values() for v in s.values()]
        row = {
            "preset": args.preset,
            "mode": args.mode,
            "ranks": trainer.dist.world,
            "global_batch": trainer.global_batch,
            "params_total_m": round(sum(p.numel() for p in params) / 1e6, 2),
            "weights_mib": round(tensor_mb(params), 1),
            "grads_mib": round(tensor_mb(p.grad for p in params), 1),
            "optimizer_mib": round(tensor_mb(optim), 1),
            "ema_mib": round(tensor_mb(trainer.ema.parameters()), 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "step_s": round(statistics.median(times), 3),
            "threads": torch.get_num_threads(),
        }
        row["state_mib"] = round(
            sum(row[k] for k in ("weights_mib", "grads_mib", "optimizer_mib", "ema_mib")), 1
        )
        if trainer.dist.main:
            print(json.dumps(row))
        close_distributed(trainer.dist)


if __name__ == "__main__":
    main()
