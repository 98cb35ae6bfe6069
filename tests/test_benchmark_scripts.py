"""The bf16 benchmark scripts run end to end on the tiny preset (their figures are in
docs/performance.md; here only that they still run and write what they promise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def run(script: str, *args: str) -> list[dict]:
    env = {**os.environ, "UNIVID_CPU_FLAGS": "amx_bf16 amx_tile"}  # auto = bf16, as with AMX
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_time_to_target_judges_keeps_and_plots(tmp_path):
    out, keep = tmp_path / "curve.jsonl", tmp_path / "kept"
    args = "--preset tiny --every 2 --stop-at 4 train.steps=6".split()
    rows = run("time_to_target.py", *args, "--out", str(out), "--keep", str(keep))
    head, *points = rows
    assert head["precision"] == "bf16" and head["steps"] == 6 and head["stop_at"] == 4
    assert [p["step"] for p in points] == [2, 4]
    for p in points:
        assert p["videos"] == 84 and 0 <= p["all_correct"] <= 84
        assert p["train_wall_s"] >= 0 and len(p["wilson95"]) == 2
        assert (keep / f"step_{p['step']:08d}" / "model.safetensors").is_file()
    assert out.read_text().splitlines() == [json.dumps(r) for r in rows]
    run("time_to_target.py", "--plot", str(out), str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_cpu_bf16_times_the_variants_in_turn():
    args = "--train --preset tiny --variants fp32,bf16-fused-attention --repeats 1 --block 1"
    (row,) = run("cpu_bf16.py", *args.split())
    assert row["bench"] == "cpu_bf16_train" and row["fp32"]["speedup_vs_fp32"] == 1
    assert row["bf16-fused-attention"]["s_per_step"] > 0
