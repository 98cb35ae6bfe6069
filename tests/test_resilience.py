"""Trust: crashes at any point cost only the steps since the last checkpoint, nothing else."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from univid.config import resolve_config
from univid.data.shapes import ShapesWorld
from univid.errors import TrainingAborted
from univid.train.checkpoint import CRASH_ENV, complete_checkpoints
from univid.train.loop import Trainer

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


class PoisonedWorld(ShapesWorld):
    """The shapes world with NaN pixels at the listed clip indices (and all from ``from_``)."""

    def __init__(self, poisoned: set[int], from_: int, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.poisoned, self.from_ = poisoned, from_

    def __getitem__(self, index: int):
        video, caption, clip = super().__getitem__(index)
        if index in self.poisoned or index >= self.from_:
            return np.full(video.shape, np.nan, np.float32), caption, clip
        return video, caption, clip


def state_hash(trainer: Trainer) -> str:
    h = hashlib.sha256()
    for p in [*trainer.model.parameters(), *trainer.ema.parameters()]:
        h.update(p.detach().numpy().tobytes())
    for state in trainer.optimizer.state.values():
        for value in state.values():
            h.update(value.numpy().tobytes())
    return h.hexdigest()


def test_a_nonfinite_step_is_skipped_whole_counted_and_logged(tmp_path):
    cfg = resolve_config("tiny", ["train.device=cpu"])
    world = PoisonedWorld({9}, from_=10**9, frames=4, height=16, width=16)
    trainer = Trainer(cfg, tmp_path, progress=False, dataset=world)
    trainer.train_step(), trainer.train_step()
    before, epoch = state_hash(trainer), trainer.scheduler.last_epoch
    assert trainer.train_step() is None  # positions 8-11 hold the NaN clip 9
    assert state_hash(trainer) == before and trainer.scheduler.last_epoch == epoch
    assert trainer.step == 2 and trainer.nonfinite == 1 and trainer.samples_seen == 12
    assert "step 3: non-finite" in (tmp_path / "anomalies.log").read_text()
    assert "batch indices [8, 9, 10, 11]" in (tmp_path / "anomalies.log").read_text()
    assert trainer.train_step() is not None and trainer.step == 3  # the data moved on
    assert state_hash(trainer) != before and trainer.guard.nonfinite_run == 0


def test_k_nonfinite_steps_in_a_row_stop_the_run_with_its_checkpoints_intact(tmp_path):
    overrides = ["train.steps=10", "train.ckpt_every=2", "train.log_every=1", "train.val_every=0"]
    cfg = resolve_config("tiny", [*overrides, "train.max_nonfinite=3", "train.device=cpu"])
    # Step 3's first attempt (positions 8-11) is poisoned; from position 20 on, everything is.
    world = PoisonedWorld({9}, from_=20, frames=4, height=16, width=16)
    trainer = Trainer(cfg, tmp_path, progress=False, dataset=world)
    with pytest.raises(TrainingAborted, match="3 steps in a row .*checkpoints.step_00000004"):
        trainer.run()
    assert trainer.step == 4 and trainer.nonfinite == 4
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000002", "step_00000004"]
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["nonfinite"]) for r in rows] == [
        ("1", "0"),
        ("2", "0"),
        ("3", "1"),
        ("4", "1"),
    ]
    resumed = Trainer(cfg, tmp_path, progress=False, dataset=world)
    resumed.resume()
    assert resumed.step == 4 and resumed.nonfinite == 1 and resumed.samples_seen == 20
    for a, b in zip(trainer.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)  # the aborted steps changed nothing after the checkpoint


def test_gradient_norm_spikes_are_logged(tmp_path):
    trainer = Trainer(resolve_config("tiny", ["train.device=cpu"]), tmp_path, progress=False)
    for norm in [1.0] * 10 + [5.0, 50.0]:
        trainer.guard.watch_spikes(norm, trainer.step + 1)
    lines = (tmp_path / "anomalies.log").read_text().splitlines()
    assert len(lines) == 1 and "gradient-norm spike 50" in lines[0]
