"""Trust: crashes at any point cost only the steps since the last checkpoint, nothing else."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from univid.train.checkpoint import CRASH_ENV, complete_checkpoints

TRAIN = [
    "train.steps=8",
    "train.log_every=1",
    "train.ckpt_every=2",
    "train.keep_last=2",
    "train.val_every=0",
    "train.device=cpu",
]


def univid(*args: str, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(CRASH_ENV, None)
    if crash:
        env[CRASH_ENV] = crash
    cmd = [sys.executable, "-m", "univid", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def metrics(run: Path) -> list[tuple[str, ...]]:
    with (run / "metrics.csv").open() as f:
        return [(r["step"], r["loss"], r["grad_norm"], r["samples"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkill_at_any_point_then_resume_latest_equals_an_uninterrupted_run(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    done = univid("train", "tiny", "--out", str(full), *TRAIN)
    assert done.returncode == 0, done.stderr[-2000:]

    args = ["train", "tiny", "--out", str(cut), "--resume", "latest", *TRAIN]
    # Killed: after step 3 (last checkpoint 2), in the middle of writing checkpoint 4, after
    # checkpoint 6 is renamed but before the exported weights and pruning, after step 7.
    resumed_from = []
    for crash, newest in [("step:3", 2), ("checkpoint:4", 2), ("published:6", 6), ("step:7", 6)]:
        done = univid(*args, crash=crash)
        assert done.returncode == -signal.SIGKILL, (crash, done.stderr[-2000:])
        assert int(complete_checkpoints(cut)[-1].name.split("_")[1]) == newest, crash
        if crash == "checkpoint:4":  # the half-written checkpoint is there, unmarked and unused
            assert (cut / "checkpoints" / ".tmp_step_00000004" / "state").is_dir()
        resumed_from += [line for line in done.stderr.splitlines() if "resuming from" in line]
    done = univid(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed_from += [line for line in done.stderr.splitlines() if "resuming from" in line]

    assert [line.split("(")[-1] for line in resumed_from] == [
        "step 2)",
        "step 2)",
        "step 6)",
        "step 6)",
    ]
    # Same losses, gradient norms and sample counts, bit for bit: every step consumed the next
    # 4 samples of the stream, none twice, none skipped.
    assert metrics(cut) == metrics(full)
    assert [int(r[3]) for r in metrics(cut)] == [4 * s for s in range(1, 9)]
    assert [p.name for p in complete_checkpoints(cut)] == ["step_00000006", "step_00000008"]
    assert not list((cut / "checkpoints").glob(".tmp*"))
    meta = json.loads((cut / "checkpoints" / "step_00000008" / "trainer.json").read_text())
    assert meta["samples_seen"] == 32
    assert (cut / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()
