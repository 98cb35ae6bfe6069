"""TAEF2 encode and decode speed on this machine: one JSON line per (size, direction) with
frames per second, fp32, ``--threads`` torch threads (2 by default), through univid's
:class:`~univid.autoencoder.taef2.TAEF2Autoencoder` (frame-wise, ``FRAME_BATCH`` frames a call).

    python benchmarks/autoencoder_speed.py --sizes 64 128 256 --frames 16 > docs/taef2_speed.jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from univid.autoencoder import load_autoencoder


def timed(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--frames", type=int, default=16, help="frames per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ae = load_autoencoder("taef2")
    for size in args.sizes:
        video = torch.rand(1, 3, args.frames, size, size) * 2 - 1
        latents = ae.encode(video)
        for direction, fn, x in (("encode", ae.encode, video), ("decode", ae.decode, latents)):
            seconds = timed(lambda fn=fn, x=x: fn(x), args.repeats)
            row = {
                "autoencoder": "taef2",
                "direction": direction,
                "size": f"{size}x{size}",
                "frames": args.frames,
                "dtype": "float32",
                "threads": args.threads,
                "frames_per_s": round(args.frames / seconds, 2),
                "torch": torch.__version__.split("+")[0],
                "cpu": platform.processor() or platform.machine(),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
