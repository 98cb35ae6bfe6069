"""Scale-out: the sample stream, and 2-process gloo runs under torchrun on the CPU.

The distributed runs use the tiny preset and compare loss curves with a one-process run of the
same global batch: DDP and FSDP2 must agree with it to fp32 rounding, a 2-rank checkpoint must
resume on 2 ranks bit for bit and on 1 rank to fp32 rounding, and a rank whose samples are bad
must neither hang nor desynchronise the others.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from univid.config import apply_overrides, load_config_file, resolve_config
from univid.data.sampler import StreamSampler
from univid.train import train
from univid.train.checkpoint import complete_checkpoints

WORKER = Path(__file__).with_name("dist_worker.py")
COMMON = [
    "train.steps=6",
    "train.log_every=1",
    "train.val_every=0",
    "train.ckpt_every=3",
    "train.warmup=2",
    "train.device=cpu",
]
TIMEOUT_S = 240  # a hung collective fails the test instead of the whole CI run


# --------------------------------------------------------------------------------------------
# The sample stream


def test_stream_splits_each_step_over_ranks_and_micro_batches_without_overlap():
    for world, accum, per_rank in [(1, 1, 8), (2, 1, 4), (4, 2, 1), (2, 2, 2)]:
        got = [
            p
            for rank in range(world)
            for micro in range(accum)
            for p in StreamSampler.positions(16, per_rank, rank, world, micro, accum)
        ]
        assert sorted(got) == list(range(16, 24)), (world, accum)


def test_finite_stream_is_a_seeded_permutation_per_epoch_and_resumable():
    sampler = StreamSampler(10, seed=3)
    stream = sampler.indices(range(30))
    for epoch in range(3):
        assert sorted(stream[10 * epoch : 10 * epoch + 10]) == list(range(10))
    assert stream[:10] != stream[10:20]  # a new order each epoch
    assert sampler.indices(range(17, 23)) == stream[17:23]  # any position, any time
    assert StreamSampler(10, seed=3).indices(range(30)) == stream
    assert StreamSampler(10, seed=4).indices(range(10)) != stream[:10]
    assert StreamSampler(None).indices(range(5, 8)) == [5, 6, 7]
    with pytest.raises(ValueError):
        StreamSampler(0)
    with pytest.raises(ValueError):
        StreamSampler.positions(0, 4, rank=2, world=2)


# --------------------------------------------------------------------------------------------
# torchrun runs


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=NPROC ARGS`` with a time limit."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd.append(f"--nproc_per_node={nproc}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


def ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]


def worker(run_dir: Path, *args: str, nproc: int = 2) -> None:
    ok(torchrun(str(WORKER), str(run_dir), *args, nproc=nproc))


def univid(*args: str) -> None:
    ok(torchrun("-m", "univid", *args))


def curve(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def assert_same_curve(a: list[dict], b: list[dict], exact: bool = False) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in ("loss", "grad_norm"):
            if exact:
                assert ra[key] == rb[key], (ra["step"], key)
            else:
                assert math.isclose(ra[key], rb[key], rel_tol=1e-5), (ra["step"], key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One process with global batch 4, and 2-rank DDP and FSDP runs with the same batch."""
    root = tmp_path_factory.mktemp("parallel")
    train(resolve_config("tiny", [*COMMON, "train.batch_size=4"]), root / "one", progress=False)
    worker(root / "ddp", *COMMON, "train.batch_size=2", "parallel.mode=ddp")
    worker(
        root / "fsdp",
        *COMMON,
        "train.batch_size=1",
        "train.grad_accum=2",
        "train.activation_checkpointing=true",
        "parallel.mode=fsdp",
    )
    return {"one": root / "one", "ddp": root / "ddp", "fsdp": root / "fsdp"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_follow_the_one_process_loss_curve(runs, mode):
    one, two = curve(runs["one"]), curve(runs[mode])
    assert len(one) == 6 and [r["samples"] for r in two] == [4.0 * s for s in range(1, 7)]
    assert_same_curve(one, two)
    # Consolidated EMA weights for `univid generate` are written by rank 0 alone.
    assert (runs[mode] / "model.safetensors").is_file()
    state = runs[mode] / "checkpoints" / "step_00000006" / "state"
    assert len(list(state.glob("*.safetensors"))) == 2  # one shard file per rank


@pytest.mark.slow
def test_two_rank_fsdp_trains_in_bf16_on_the_cpu(tmp_path):
    """FSDP's bf16 policy (bf16 all-gathers, fp32 reductions) on CPU ranks follows a one-process
    bf16 autocast run: the same bf16 weights in the same matmuls. (It crashed at the first step
    before the root's weights were kept fp32.)"""
    bf16 = [*COMMON, "train.precision=bf16"]
    train(resolve_config("tiny", [*bf16, "train.batch_size=4"]), tmp_path / "one", progress=False)
    worker(tmp_path / "fsdp", *bf16, "train.batch_size=2", "parallel.mode=fsdp")
    one, two = curve(tmp_path / "one"), curve(tmp_path / "fsdp")
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 7))
    for a, b in zip(one, two):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-4), (a, b)  # measured: 3e-6


def cut_at_step_3(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    shutil.rmtree(to / "checkpoints" / "step_00000006")
    (to / "metrics.csv").unlink()
    assert [p.name for p in complete_checkpoints(to)] == ["step_00000003"]
    return to


@pytest.mark.slow
def test_two_rank_fsdp_checkpoint_resumes_on_two_ranks_and_on_one(runs, tmp_path):
    tail = curve(runs["fsdp"])[3:]
    two = cut_at_step_3(runs["fsdp"], tmp_path / "two")
    univid("train", "--resume", str(two))
    assert_same_curve(curve(two), tail, exact=True)

    one = cut_at_step_3(runs["fsdp"], tmp_path / "one")
    cfg = load_config_file(one / "config.json")
    cfg = apply_overrides(cfg, ["parallel.mode=none", "train.batch_size=4", "train.grad_accum=1"])
    train(cfg, one, resume=True, progress=False)
    assert_same_curve(curve(one), tail)


@pytest.mark.slow
def test_one_process_checkpoint_resumes_sharded_on_two_ranks(runs, tmp_path):
    two = cut_at_step_3(runs["one"], tmp_path / "two")
    univid("train", "--resume", str(two), "parallel.mode=fsdp", "train.batch_size=2")
    assert_same_curve(curve(two), curve(runs["one"])[3:])


@pytest.mark.slow
def test_bad_samples_on_one_rank_neither_hang_nor_desynchronise(tmp_path):
    # Step 1 takes stream positions 0-3: rank 0 gets 0-1, rank 1 gets 2-3 (both bad there).
    # Step 3 (positions 8-11) is bad on every rank, so it cannot update at all.
    bad = "2,3,8,9,10,11"
    worker(tmp_path, "--bad", bad, *COMMON, "train.batch_size=2", "parallel.mode=ddp")
    rows = curve(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # every rank took every step
    assert [r["skipped"] for r in rows] == [2, 2, 6, 6, 6, 6]
    assert math.isnan(rows[2]["loss"]) and all(math.isfinite(rows[i]["loss"]) for i in (0, 1, 3))
    log = (tmp_path / "skipped.log").read_text().splitlines()
    assert len(log) == 6 and sum("rank 1" in line for line in log) == 4
    assert "clip 2 is corrupt" in log[0]


@pytest.mark.slow
def test_mode_none_under_torchrun_is_a_clear_error(tmp_path):
    done = torchrun("-m", "univid", "train", "tiny", "--out", str(tmp_path / "run"))
    assert done.returncode != 0
    assert "univid: error: parallel.mode='none' is invalid under torchrun with 2" in done.stderr


@pytest.mark.gpu
def test_fsdp_with_nccl_and_bf16_follows_the_unsharded_cuda_run(tmp_path):
    import torch

    gpus = min(2, torch.cuda.device_count())  # one GPU still runs NCCL and FSDP2 end to end
    cuda = [o for o in COMMON if o != "train.device=cpu"] + ["train.device=cuda"]
    train(resolve_config("tiny", [*cuda, "train.batch_size=4"]), tmp_path / "one", progress=False)
    worker(
        tmp_path / "fsdp", *cuda, f"train.batch_size={4 // gpus}", "parallel.mode=fsdp", nproc=gpus
    )
    one, sharded = curve(tmp_path / "one"), curve(tmp_path / "fsdp")
    assert [r["step"] for r in one] == [r["step"] for r in sharded]
    for a, b in zip(one, sharded):  # bf16 compute on both sides, in a different order
        assert math.isclose(a["loss"], b["loss"], rel_tol=3e-2), (a, b)
