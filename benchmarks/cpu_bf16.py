"""bf16 on a CPU: the attention bf16 training takes, and ``univid train``'s step in fp32 against
bf16 autocast, alternating in one process; one JSON line per measurement.

    python benchmarks/cpu_bf16.py --attention            # matmul vs fused kernel, 5 sizes
    python benchmarks/cpu_bf16.py --train [--preset shapes-tiny] [--repeats 8] [--block 5] \
        [--variants fp32,bf16,bf16-compiled]

The train part builds one :class:`univid.train.loop.Trainer` per variant and times blocks of
``--block`` steps in turn (each block ending with the read-back ``Trainer.run`` makes at its
logging interval), after two untimed blocks each; ratios are taken pair by pair.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from univid import speed
from univid.config import resolve_config
from univid.device import cpu_flags
from univid.model.dit import Attention
from univid.speed import MatmulAttention, swap_attention

# (batch, heads, tokens, head_dim): the bundled model's training step, then longer sequences.
ATTENTION_SHAPES = [(32, 6, 142, 32), (16, 6, 270, 32), (8, 6, 528, 64), (2, 6, 1056, 64)]
ATTENTION_SHAPES += [(1, 6, 2080, 64)]
VARIANTS = {
    "fp32": ["train.precision=fp32"],
    "bf16": ["train.precision=bf16"],
    "bf16-compiled": ["train.precision=bf16", "train.compile=true"],
    "fp32-compiled": ["train.precision=fp32", "train.compile=true"],
    "bf16-fused-attention": ["train.precision=bf16"],  # as before MatmulAttention
}


def host() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_flags": cpu_flags(),
    }


def forward_backward(module: torch.nn.Module, qkv: list[torch.Tensor], grad: torch.Tensor) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(*qkv, None)
    out.backward(grad)


def attention(repeats: int) -> None:
    """Forward + backward under bf16 autocast: :class:`MatmulAttention` (at every length here)
    against the fused kernel, alternating."""
    speed.MATMUL_ATTENTION_MAX_TOKENS = 1 << 30
    modules = {"matmul": MatmulAttention(), "fused": Attention()}
    for b, h, n, d in ATTENTION_SHAPES:
        qkv = [torch.randn(b, h, n, d, dtype=torch.bfloat16, requires_grad=True) for _ in "qkv"]
        grad = torch.randn_like(qkv[0])
        times: dict[str, list[float]] = {name: [] for name in modules}
        for rep in range(repeats + 2):
            for name, module in modules.items():
                start = time.perf_counter()
                forward_backward(module, qkv, grad)
                if rep >= 2:
                    times[name].append(time.perf_counter() - start)
        ratios = [f / m for f, m in zip(times["fused"], times["matmul"])]
        print(
            json.dumps(
                {
                    "bench": "cpu_bf16_attention",
                    "shape": [b, h, n, d],
                    "matmul_ms": 1e3 * statistics.median(times["matmul"]),
                    "fused_ms": 1e3 * statistics.median(times["fused"]),
                    "fused_over_matmul": statistics.median(ratios),
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                    "repeats": repeats,
                    **host(),
                }
            ),
            flush=True,
        )


def train(preset: str, variants: list[str], repeats: int, block: int) -> None:
    """Seconds per ``univid train`` step of each variant, alternating blocks."""
    from univid.train.loop import Trainer

    base = ["train.device=cpu", "train.val_every=0"]
    with tempfile.TemporaryDirectory() as folder:
        trainers = {
            name: Trainer(
                resolve_config(preset, base + VARIANTS[name]), Path(folder) / name, progress=False
            )
            for name in variants
        }
        if "bf16-fused-attention" in trainers:
            swap_attention(trainers["bf16-fused-attention"].net.blocks, Attention)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for rep in range(repeats + 2):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                for _ in range(block):
                    trainer.update()
                trainer.settle()
                if rep >= 2:
                    times[name].append((time.perf_counter() - start) / block)
        for trainer in trainers.values():
            trainer.close()
    first = variants[0]
    row = {"bench": "cpu_bf16_train", "preset": preset, "block": block, "repeats": repeats}
    for name in variants:
        ratios = [a / b for a, b in zip(times[first], times[name])]
        row[name] = {
            "s_per_step": statistics.median(times[name]),
            "min_s": min(times[name]),
            f"speedup_vs_{first}": statistics.median(ratios),
            "speedup_min": min(ratios),
            "speedup_max": max(ratios),
        }
    print(json.dumps({**row, **host()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attention", action="store_true")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--preset", default="shapes-tiny")
    parser.add_argument("--variants", default="fp32,bf16")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--block", type=int, default=5)
    args = parser.parse_args()
    if args.attention:
        attention(args.repeats)
    if args.train:
        names = args.variants.split(",")
        unknown = sorted(set(names) - set(VARIANTS))
        if unknown:
            parser.error(f"unknown variants {unknown}: choose from {sorted(VARIANTS)}")
        train(args.preset, names, args.repeats, args.block)


if __name__ == "__main__":
    main()
