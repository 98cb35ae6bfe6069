"""Compile time of regional torch.compile, cold and warm: run twice with the same cache folder.

    export UNIVID_COMPILE_CACHE=/tmp/cc; rm -rf /tmp/cc
    python benchmarks/compile_cache.py; python benchmarks/compile_cache.py

Prints one JSON line: files in the cache, the first forward + backward (compile + step) and the
next one, for the S model at batch 2 and 1,056 tokens.
"""

from __future__ import annotations

import json
import os

import torch

from univid import speed
from univid.bench.measure import time_once
from univid.bench.steps import univid_runner
from univid.config import resolve_config


def main() -> None:
    size = os.environ.get("SIZE", "S")
    runner = univid_runner(resolve_config(size, []), torch.device("cpu"))
    cache = speed.use_compile_cache()
    speed.prepare_blocks(runner.model, checkpointing=False, compile_blocks=True)
    x, t, text = torch.randn(2, 3, 8, 64, 64), torch.rand(2), torch.randn(2, 32, 384)
    times = [
        round(time_once(lambda: runner.model(x, t, text, None).square().mean().backward())[1], 2)
        for _ in range(2)
    ]
    files = sum(len(names) for _, _, names in os.walk(cache))
    row = {"size": size, "cache": str(cache), "files": files, "first_s": times[0]}
    print(json.dumps({**row, "next_s": times[1]}))


if __name__ == "__main__":
    main()
