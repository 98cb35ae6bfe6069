"""Runs under careless use: two runs into one folder, Ctrl-C in a checkpoint, a full disk, a
run that stopped before its first checkpoint, an edited resume, extras that fail."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from univid import files as univid_files
from univid.cli import main
from univid.config import resolve_config
from univid.errors import InputError
from univid.train import checkpoint as ckpt
from univid.train import train
from univid.train.checkpoint import CRASH_ENV, INTERRUPT_ENV, complete_checkpoints
from univid.train.metrics import HEADER, start_run
from univid.train.previews import Previews

TRAIN = ["train.device=cpu", "train.log_every=1", "train.ckpt_every=2", "train.val_every=0"]


def env() -> dict[str, str]:
    out = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in (CRASH_ENV, INTERRUPT_ENV):
        out.pop(name, None)
    return out


def univid(*args: str, **extra_env: str) -> subprocess.Popen:
    """``python -m univid ARGS`` with Ctrl-C's default handling: a shell that starts pytest in
    the background (``pytest &`` in a script) leaves SIGINT ignored, and children inherit it."""
    cmd = [sys.executable, "-m", "univid", *args]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env(), **extra_env},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def finish(p: subprocess.Popen) -> tuple[int, str]:
    _, err = p.communicate(timeout=240)
    return p.returncode, err


def one_line(err: str) -> str:
    """The messages of stderr without progress bars; asserts there is no traceback."""
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("univid:")]
    return "\n".join(lines)


def steps(run: Path) -> list[int]:
    return [int(p.name.split("_")[1]) for p in complete_checkpoints(run)]


def seeds(run: Path) -> set[int]:
    found = {json.loads((run / "config.json").read_text())["train"]["seed"]}
    for c in complete_checkpoints(run):
        found.add(json.loads((c / "config.json").read_text())["train"]["seed"])
    return found


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "tiny", "--out", str(out), "train.steps=4", *TRAIN]) == 0
    return out


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    """A copy of a finished 4-step run with checkpoints 2 and 4."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


# --- item 3: two runs into one folder ---------------------------------------------------------


def test_two_runs_started_together_into_one_folder_one_trains_the_other_is_refused(tmp_path):
    out = tmp_path / "run"
    args = ["train", "tiny", "--out", str(out), "train.steps=30", *TRAIN]
    runs = [univid(*args, f"train.seed={seed}") for seed in (1, 2)]
    (rc1, err1), (rc2, err2) = (finish(p) for p in runs)
    assert sorted([rc1, rc2]) == [0, 2], (err1[-2000:], err2[-2000:])
    winner, loser = (1, 2) if rc1 == 0 else (2, 1)
    refused = one_line(err2 if winner == 1 else err1)
    pid = runs[winner - 1].pid
    assert len(refused.splitlines()) == 1 and "is in use by another run" in refused
    assert f"pid {pid} on host" in refused and " since " in refused
    # Nothing mixed: the config, every checkpoint and the metrics are the winner's.
    assert seeds(out) == {winner} and steps(out)[-1] == 30
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == HEADER and [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 31))


def test_resume_while_another_run_holds_the_folder_then_ctrl_c_between_steps(tmp_path):
    out = tmp_path / "run"
    holder = univid("train", "tiny", "--out", str(out), "train.steps=100000", *TRAIN)
    deadline = time.monotonic() + 120
    while not steps(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert steps(out), finish(holder)
    code = main(["train", "--resume", str(out)])
    assert code == 2  # in-process: the holder is another process
    holder.send_signal(signal.SIGINT)  # Ctrl-C between steps (or in a checkpoint: both clean)
    rc, err = finish(holder)
    assert rc == 130 and one_line(err).endswith("univid: interrupted"), err[-2000:]
    assert not list((out / "checkpoints").glob(".tmp*"))
    done = steps(out)[-1]
    assert main(["train", "--resume", str(out), f"train.steps={done + 2}"]) == 0
    assert steps(out)[-1] == done + 2


def test_the_refusal_names_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from univid.train.run import run_lock
        with run_lock(Path({str(out)!r})):
            print("held", flush=True)
            sys.stdin.read()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (
            ["train", "tiny", "--out", str(out)],
            ["train", "tiny", "--out", str(out), "--resume", "latest"],
        ):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1
            assert f"in use by another run (pid {holder.pid} on host" in err
    finally:
        holder.communicate("", timeout=60)
    # Released when the holder ends; the lock file alone does not make the folder "not empty".
    assert main(["train", "tiny", "--out", str(out), "train.steps=2", *TRAIN]) == 0


def test_the_lock_is_reentrant_within_a_thread_and_released_after(tmp_path):
    from univid.train.run import run_lock

    with run_lock(tmp_path), run_lock(tmp_path):
        pass
    with run_lock(tmp_path):  # taken again: it was released
        pass


# --- item 5: Ctrl-C during a checkpoint write --------------------------------------------------


def test_ctrl_c_in_a_checkpoint_write_finishes_it_and_exits_130(tmp_path):
    out = tmp_path / "run"
    args = ["train", "tiny", "--out", str(out), "train.steps=6", *TRAIN]
    p = univid(*args, **{INTERRUPT_ENV: "checkpoint:4"})
    rc, err = finish(p)
    lines = one_line(err)
    assert rc == 130 and lines.endswith("univid: interrupted"), err[-3000:]
    assert "finishing checkpoint 4" in lines
    assert steps(out) == [2, 4] and not list((out / "checkpoints").glob(".tmp*"))
    assert main(["train", "--resume", str(out)]) == 0
    assert steps(out) == [4, 6]


def test_sigterm_in_a_checkpoint_write_finishes_it_then_terminates(tmp_path):
    """A scheduler's polite stop waits for the checkpoint too, then ends the process as
    SIGTERM does (killed by the signal: there is no handler to clean up after)."""
    out = tmp_path / "run"
    args = ["train", "tiny", "--out", str(out), "train.steps=6", *TRAIN]
    p = univid(*args, **{INTERRUPT_ENV: "checkpoint:4@SIGTERM"})
    rc, err = finish(p)
    assert rc == -signal.SIGTERM, err[-3000:]
    assert "finishing checkpoint 4" in err
    assert steps(out) == [2, 4] and not list((out / "checkpoints").glob(".tmp*"))


# --- item 6: a full disk ----------------------------------------------------------------------

FULL_DISK_SCRIPT = """
import contextlib, io, json, subprocess, sys
from univid.cli import main
disk, report = sys.argv[1], sys.argv[2]
results = {}
def run(name, argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException as exc:  # a traceback: the test fails on it
            import traceback
            traceback.print_exc(file=err)
            code = 99
    results[name] = [code, err.getvalue()]
train = ["train.device=cpu", "train.log_every=1", "train.ckpt_every=2", "train.val_every=0"]
run("train", ["train", "tiny", "--out", disk + "/run", "train.steps=6", *train])
subprocess.run(["cp", "-a", disk + "/run", report + "-run"], check=True)
subprocess.run(["dd", "if=/dev/zero", "of=" + disk + "/fill", "bs=64k"], capture_output=True)
run("generate", ["generate", "a red circle", "--out", disk + "/x.mp4", "--steps", "2"])
run("export", ["export", report + "-run", "--out", disk + "/m"])
results["files"] = sorted(str(p) for p in __import__("pathlib").Path(disk).rglob("*"))
open(report, "w").write(json.dumps(results))
"""


def check_full_disk(results: dict, disk: str, saved: Path) -> None:
    for name in ("train", "generate", "export"):
        code, err = results[name]
        message = one_line(err).splitlines()[-1]
        assert code == 2, (name, err[-3000:])
        assert message.startswith("univid: error: cannot write ") and message.endswith(
            "no space left on device"
        ), (name, message)
        assert disk in message, (name, message)
    names = [Path(f).name for f in results["files"]]
    assert not [n for n in names if n.startswith(".tmp_step_") or n.endswith(".tmp")], names
    assert "x.mp4" not in names and "model.safetensors" in names  # only the run's own
    # The completed checkpoint is intact: on a bigger disk the run resumes from it.
    assert steps(saved) == [2]
    assert main(["train", "--resume", str(saved)]) == 0
    assert steps(saved) == [4, 6]
    rows = (saved / "metrics.csv").read_text().splitlines()
    assert rows[0] == HEADER and [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 7))


def test_a_full_disk_is_one_line_and_loses_no_checkpoint(tmp_path):
    """On a real, small tmpfs (in a user+mount namespace), where the machine allows one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         f"mount -t tmpfs -o size=64k tmpfs {disk}"],
        capture_output=True, text=True,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({probe.stderr.strip()}); see the simulated test")
    report = tmp_path / "report.json"
    # 2500 KiB: the run folder and one checkpoint fit, the second checkpoint does not.
    cmd = (
        f"mount -t tmpfs -o size=2500k tmpfs {disk} && "
        f"{shlex.quote(sys.executable)} -c {shlex.quote(FULL_DISK_SCRIPT)} {disk} {report}"
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", cmd],
        capture_output=True, text=True, env=env(), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    check_full_disk(json.loads(report.read_text()), str(disk), Path(f"{report}-run"))


def test_a_full_disk_simulated_at_each_write(tmp_path, monkeypatch, capsys):
    """The same promises with ENOSPC raised where files are flushed, on any machine."""
    disk = tmp_path / "disk"
    disk.mkdir()
    real = univid_files.fsync
    full = {"on": False}

    def fsync(path: Path) -> None:
        if full["on"] or ".tmp_step_00000004" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path)

    monkeypatch.setattr(univid_files, "fsync", fsync)
    monkeypatch.setattr(ckpt, "fsync", fsync)
    results = {}
    train_args = ["train", "tiny", "--out", str(disk / "run"), "train.steps=6", *TRAIN]
    results["train"] = [main(train_args), capsys.readouterr().err]
    saved = tmp_path / "saved"
    shutil.copytree(disk / "run", saved)
    full["on"] = True
    gen = ["generate", "a red circle", "--out", str(disk / "x.mp4"), "--steps", "2"]
    results["generate"] = [main(gen), capsys.readouterr().err]
    results["export"] = [main(["export", str(saved), "--out", str(disk / "m")]), ""]
    results["export"][1] = capsys.readouterr().err
    results["files"] = [str(p) for p in disk.rglob("*")]
    monkeypatch.setattr(univid_files, "fsync", real)
    monkeypatch.setattr(ckpt, "fsync", real)
    check_full_disk(results, str(disk), saved)


def test_metrics_csv_cut_short_is_repaired_on_start(tmp_path):
    path = tmp_path / "metrics.csv"
    row = ",".join(["{}"] + ["1.0"] * (len(HEADER.split(",")) - 1))
    for broken, kept in [
        ("", []),  # 0 bytes: the header is put back
        ("step,lo", []),  # header cut short
        (HEADER + "\n" + row.format(1) + "\n" + row.format(2)[:7], [1]),  # last row cut short
        (HEADER + "\n" + "".join(row.format(s) + "\n" for s in (1, 2, 3)), [1, 2]),  # past step
    ]:
        path.write_text(broken)
        start_run(tmp_path, "{}", step=2).close()
        lines = path.read_text().splitlines()
        assert lines[0] == HEADER and [int(r.split(",")[0]) for r in lines[1:]] == kept


# --- item 12: dead ends and silent changes ----------------------------------------------------


def test_a_run_that_stopped_before_its_first_checkpoint_is_no_dead_end(run_dir, capsys):
    for c in complete_checkpoints(run_dir):
        shutil.rmtree(c)
    (run_dir / "model.safetensors").unlink()
    (run_dir / "checkpoints" / ".tmp_step_00000002" / "state").mkdir(parents=True)
    capsys.readouterr()
    # --resume says what to run instead, and that command works.
    assert main(["train", "--resume", str(run_dir), "train.steps=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no complete checkpoint" in err
    suggested = shlex.split(err.split("start it over with: ")[1])
    assert suggested[:2] == ["univid", "train"] and suggested[-1] == "train.steps=2"
    assert main(suggested[1:]) == 0
    assert "starting it over" in capsys.readouterr().err
    assert steps(run_dir) == [2]
    # The same command as the first time also works.
    shutil.rmtree(complete_checkpoints(run_dir)[0])
    (run_dir / "model.safetensors").unlink()
    assert main(["train", "tiny", "--out", str(run_dir), "train.steps=2", *TRAIN]) == 0
    assert steps(run_dir) == [2]
    assert not list((run_dir / "checkpoints").glob(".tmp*"))


def test_a_fresh_run_refuses_a_folder_with_a_run_or_foreign_files(run_dir, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for out, message in [(run_dir, f"use --resume {run_dir}"), (other, "holds no univid run")]:
        capsys.readouterr()
        assert main(["train", "tiny", "--out", str(out), *TRAIN]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
    assert (other / "notes.txt").read_text() == "mine"


def test_resume_refuses_changes_to_the_batch_data_model_or_seed(run_dir, capsys):
    for changes, listed in [
        (["train.batch_size=2"], ["train.batch_size 4 -> 2"]),
        (["train.grad_accum=2"], ["train.grad_accum 1 -> 2"]),
        (["train.seed=7", "model.depth=3"], ["model.depth", "train.seed 0 -> 7"]),
        (["data.frames=8"], ["data.frames 4 -> 8"]),
    ]:
        capsys.readouterr()
        assert main(["train", "--resume", str(run_dir), *changes]) == 2, changes
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(k in err for k in listed), err
    assert steps(run_dir) == [2, 4]
    # Harmless ones go through.
    harmless = ["train.steps=6", "train.log_every=3", "train.keep_last=3", "train.threads=1"]
    assert main(["train", "--resume", str(run_dir), *harmless]) == 0
    assert steps(run_dir) == [2, 4, 6]


# --- item 9: extras never cost trained steps --------------------------------------------------


def test_failing_samples_and_validation_are_skipped_and_said_once(tmp_path, monkeypatch, capsys):
    def bad_samples(self, *args):
        raise InputError("sample prompt 0 has control characters")

    def oom(self, *args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 17.00 GiB")

    monkeypatch.setattr(Previews, "write_samples", bad_samples)
    monkeypatch.setattr(Previews, "validation_losses", oom)
    cfg = resolve_config(
        "tiny", [*TRAIN, "train.steps=4", "train.sample_every=2", "train.val_every=2"]
    )
    row = train(cfg, tmp_path)
    assert row["step"] == 4 and steps(tmp_path) == [2, 4]  # the final checkpoint too
    said = [ln for ln in one_line(capsys.readouterr().err).splitlines() if "skipped" in ln]
    assert len(said) == 2 and "samples skipped" in said[1] and "validation skipped" in said[0]
    logged = (tmp_path / "extras.log").read_text().splitlines()
    assert len(logged) == 4 and "control characters" in logged[1] and "out of memory" in logged[0]


# --- item 8: export ---------------------------------------------------------------------------


def test_export_onto_a_file_is_one_line_and_export_writes_atomically(run_dir, tmp_path, capsys):
    target = tmp_path / "exists.txt"
    target.write_text("keep me")
    capsys.readouterr()
    assert main(["export", str(run_dir), "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file, not a folder" in err
    assert target.read_text() == "keep me"
    assert main(["export", str(run_dir), "--out", str(tmp_path / "m")]) == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


def test_an_os_error_met_anywhere_is_one_line_naming_its_file(tmp_path, monkeypatch, capsys):
    """Root bypasses permissions here, so the OS's refusal is injected where export writes."""
    import errno

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "m"))

    monkeypatch.setattr("univid.build.export_model_dir", refuse)
    assert main(["export", "shapes-tiny", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"univid: error: {tmp_path / 'm'}: permission denied (--debug shows where)"
    with pytest.raises(PermissionError):
        main(["--debug", "export", "shapes-tiny", "--out", str(tmp_path / "m")])
