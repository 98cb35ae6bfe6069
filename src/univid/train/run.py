"""Starting a training run: its data and config, a new run or a resumed one, on one or many ranks.

The policy of ``univid train`` lives here, not in the CLI: a fresh run needs an empty folder (or
one left by a run that stopped before its first checkpoint, which is started over); a run is
resumed from its newest complete checkpoint; ``--resume latest`` does either. A run holds a lock
on its folder for its whole life, so a second run into the same folder is refused.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from univid.config import Config, apply_overrides, load_config_file, resolve_config
from univid.device import pick_device
from univid.errors import InputError
from univid.lora import base_model, record_base
from univid.parallel import close_distributed, torchrun_rank, torchrun_world
from univid.train.checkpoint import latest_checkpoint
from univid.train.loop import Trainer
from univid.train.metrics import start_run
from univid.train.paths import PATHS_DIR, make_paths, paths_complete

LOCK = ".lock"
# What a run writes before its first checkpoint. A folder holding only these, with no complete
# checkpoint, is a run that stopped before it saved anything: nothing trained is in it.
EARLY_FILES = frozenset(
    {
        "config.json",
        "metrics.csv",
        "tensorboard",
        "samples",
        "checkpoints",
        "skipped.log",
        "anomalies.log",
        "extras.log",
        "sessions.jsonl",
        PATHS_DIR,  # a distillation run's teacher paths, made before its first step
    }
)

_held: dict[str, tuple[int, int, int]] = {}  # run folder -> (lock fd, holding thread, depth)
_held_guard = threading.Lock()


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock (``RUN/.lock``, an OS lock: released on exit, crash or
    SIGKILL) for the block; refuse with one line naming the holder when another run has it.

    Reentrant within a thread (``start_or_resume`` and ``train`` both hold it). Under torchrun
    only rank 0 takes it: the other ranks follow rank 0 and fail with it."""
    if torchrun_rank() != 0:
        yield
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        key = str(run_dir.resolve())
    except OSError as exc:
        raise InputError(f"cannot write the run folder {run_dir}: {exc.strerror}") from None
    me = threading.get_ident()
    with _held_guard:
        held = _held.get(key)
        if held is not None and held[1] == me:
            _held[key] = (held[0], me, held[2] + 1)
    if held is not None:
        if held[1] != me:
            raise InputError(f"{run_dir} is in use by another run in this process")
        try:
            yield
        finally:
            with _held_guard:
                fd, owner, depth = _held[key]
                _held[key] = (fd, owner, depth - 1)
        return
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InputError(f"cannot write the run folder {run_dir}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        for _ in range(20):  # the holder writes who it is just after it takes the lock
            holder = os.pread(fd, 500, 0).decode("utf-8", "replace").strip()
            if holder:
                break
            time.sleep(0.05)
        holder = holder or "just starting"
        os.close(fd)
        raise InputError(
            f"{run_dir} is in use by another run ({holder}); wait for it to end or choose "
            "another --out"
        ) from None
    try:  # who holds it, for the message above (best effort: a full disk must not stop us)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        info = f"pid {os.getpid()} on host {socket.gethostname()} since {since}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
    except OSError:
        pass
    with _held_guard:
        _held[key] = (fd, me, 1)
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]
        os.close(fd)  # releases the lock; the file stays (deleting it would race)


def train(
    cfg: Config,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    dataset: Any = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (or continue it); returns the last metrics row.

    Under torchrun every rank calls this; ``cfg.parallel.mode`` says how they share the work.
    ``dataset`` replaces the config's data (see :func:`univid.train.batches.open_dataset`).
    The run folder is locked while it trains (see :func:`run_lock`)."""
    with run_lock(Path(run_dir)):
        trainer = Trainer(cfg, Path(run_dir), progress=progress, dataset=dataset)
        try:
            if resume:
                path = trainer.resume()
                if trainer.dist.main and progress:
                    print(f"univid: resuming from {path} (step {trainer.step})", file=sys.stderr)
            row = trainer.run()
            # Every rank done before the process group goes: a rank that tears gloo down while
            # another still finishes once aborted at exit ("terminate called ...", CI).
            trainer.dist.barrier()
            return row
        finally:
            trainer.close()
            close_distributed(trainer.dist)


def start_or_resume(
    config: str | None, overrides: list[str], out: str | None, resume: str | None
) -> dict[str, Any]:
    """What ``univid train [CONFIG] [key=value ...] [--out DIR] [--resume DIR|latest]`` does.

    - ``--resume DIR``: continue DIR from its newest complete checkpoint (overrides apply);
    - ``--resume latest --out DIR``: continue DIR if it has a checkpoint, else start it;
    - otherwise start CONFIG in ``--out DIR``, which must be new or empty, or hold only a run
      that stopped before its first checkpoint (it is started over)."""
    if resume == "latest":
        if out is None:
            raise InputError("--resume latest needs --out DIR")
        run_dir = _folder(out)
        with run_lock(run_dir):
            if latest_checkpoint(run_dir) is not None:
                return _resume(run_dir, overrides)
            if config is None:
                raise InputError(
                    f"{out} has no complete checkpoint and no CONFIG_OR_PRESET given; start it "
                    f"with: {_command(str(run_dir / 'config.json'), run_dir, overrides)}"
                    if (run_dir / "config.json").is_file()
                    else f"{out} has no complete checkpoint and no CONFIG_OR_PRESET given"
                )
            return train(resolve_config(config, overrides), run_dir)
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.json").is_file():
            raise InputError(f"cannot resume: {run_dir} is not a training run (no config.json)")
        with run_lock(run_dir):
            return _resume(run_dir, overrides)
    if config is None or out is None:
        raise InputError("train needs CONFIG_OR_PRESET and --out DIR (or --resume DIR)")
    cfg = resolve_config(config, overrides)
    run_dir = _folder(out)
    with run_lock(run_dir):
        # Under torchrun only rank 0 checks: the others could already see its new run folder.
        if torchrun_rank() == 0:
            _claim(run_dir)
        return train(cfg, run_dir)


def finetune(base: str, overrides: list[str], out: str) -> dict[str, Any]:
    """What ``univid finetune BASE --out DIR [key=value ...]`` does: a new run in DIR whose
    config is BASE's with ``lora.base=BASE`` and the overrides (``lora.rank=0`` trains every
    weight instead of adapters). The model section is BASE's (``model.chunk`` may be set: a
    streaming model from a full-attention one); its weights' hash is recorded.
    A fine-tuning run is resumed like any other: ``univid train --resume DIR``."""
    from univid.build import load_model_dir
    from univid.lora import record_base, resolve_base

    base_cfg, _ = load_model_dir(base)
    keys = [o.split("=", 1)[0] for o in overrides]
    # model.chunk adds no weights: a streaming model starts from a full-attention one.
    if any(k.startswith(("model.", "lora.base")) and k != "model.chunk" for k in keys):
        raise InputError(
            "model.* (but model.chunk) and lora.base come from BASE; they cannot be overridden"
        )
    # A base that was itself fine-tuned records its own base's hash: this run records BASE's.
    base_keys = [f"lora.base={resolve_base(base)}", "lora.base_sha256="]
    cfg = apply_overrides(base_cfg, [*base_keys, *overrides])
    cfg = record_base(cfg)  # a base it cannot adapt fails before the run folder is made
    run_dir = _folder(out)
    with run_lock(run_dir):
        if torchrun_rank() == 0:
            _claim(run_dir)
        return train(cfg, run_dir)


# What `univid distill` sets unless told otherwise: the student learns from its teacher's paths
# (no caption dropout: it never samples without guidance), fewer steps at a lower LR than
# training from scratch, no validation loss (it measures the teacher's objective, not the
# student's), and samples with 2 steps and the guidance built in.
DISTILL_DEFAULTS = (
    "distill.method=average",
    "flow.guidance=1",
    "flow.sample_steps=2",
    "data.caption_dropout=0",
    "train.steps=2000",
    "train.lr=2e-4",
    "train.warmup=100",
    "train.val_every=0",
    "train.sample_every=500",
    "train.ckpt_every=250",
)


def student_config(teacher: str, overrides: list[str]) -> Config:
    """The config of a new distillation run of ``teacher``: the teacher's, with
    ``lora.base=TEACHER lora.rank=0`` (the student starts as the teacher, every weight trained),
    ``distill.guidance`` = the teacher's guidance, :data:`DISTILL_DEFAULTS`, a step input for
    an 'average' student, then ``overrides``."""
    from univid.build import load_model_dir
    from univid.lora import resolve_base

    base_cfg, _ = load_model_dir(teacher)
    if base_cfg.distill.method:
        raise InputError(f"{teacher} is itself a few-step student: distil its teacher instead")
    if base_cfg.data.cache:
        raise InputError(
            f"{teacher} was trained on a cache ({base_cfg.data.cache}); its paths would be drawn "
            "from the shapes world's clips and captions, so distilling it is not supported yet"
        )
    if any(o.split("=", 1)[0].startswith(("model.", "lora.")) for o in overrides):
        raise InputError("model.* and lora.* come from TEACHER; they cannot be overridden")
    given = [*DISTILL_DEFAULTS, *overrides]
    method = [o.split("=", 1)[1] for o in given if o.startswith("distill.method=")][-1]
    return apply_overrides(
        base_cfg,
        [
            f"lora.base={resolve_base(teacher)}",
            "lora.rank=0",
            f"model.step_input={'true' if method == 'average' else 'false'}",
            f"distill.guidance={base_cfg.flow.guidance!r}",
            *given,
        ],
    )


def distill(teacher: str, overrides: list[str], out: str, progress: bool = True) -> dict[str, Any]:
    """What ``univid distill TEACHER --out DIR [key=value ...]`` does: make the teacher's paths
    (:mod:`univid.train.paths`, kept in ``DIR/teacher_paths``), then train the student on them.

    Run again with the same arguments, it goes on from where it stopped: from the first missing
    paths file, or from the newest checkpoint (then the overrides apply as for ``--resume``)."""
    run_dir = _folder(out)
    with run_lock(run_dir):
        if latest_checkpoint(run_dir) is not None:
            return _resume(run_dir, overrides)
        cfg = record_base(student_config(teacher, overrides))
        saved = run_dir / "config.json"
        same = saved.is_file() and saved.read_text(encoding="utf-8") == cfg.to_json()
        if torchrun_world() > 1 and not (same and paths_complete(cfg, run_dir)):
            raise InputError(
                "make the teacher's paths in one process first (univid distill without "
                "torchrun, stopped with Ctrl-C once they are made), then distil under torchrun"
            )
        if not same:
            _claim(run_dir)  # a new run, or one stopped before its first checkpoint
        start_run(run_dir, cfg.to_json(), 0).close()
        if not cfg.distill.paths_from:
            _, teacher_net = base_model(cfg)
            device = pick_device(cfg.train.device)
            make_paths(cfg, teacher_net, run_dir / PATHS_DIR, device, progress)
        return train(cfg, run_dir, progress=progress)


def _folder(out: str) -> Path:
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {run_dir} is a file, not a folder")
    return run_dir


def _command(config: str, run_dir: Path, overrides: list[str]) -> str:
    return shlex.join(["univid", "train", config, "--out", str(run_dir), *overrides])


def _resume(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    if latest_checkpoint(run_dir) is None:
        raise InputError(
            f"cannot resume {run_dir}: it has no complete checkpoint (it stopped before its "
            "first, so nothing trained is lost by starting over); start it over with: "
            f"{_command(str(run_dir / 'config.json'), run_dir, overrides)}"
        )
    cfg = apply_overrides(load_config_file(run_dir / "config.json"), overrides)
    return train(cfg, run_dir, resume=True)


def _claim(run_dir: Path) -> None:
    """Make sure a fresh run may use ``run_dir`` (the caller holds its lock)."""
    entries = [p for p in run_dir.iterdir() if p.name != LOCK]
    if not entries:
        return
    if latest_checkpoint(run_dir) is not None:
        raise InputError(f"{run_dir} is not empty; use --resume {run_dir} to continue that run")
    if not _stopped_before_first_checkpoint(run_dir, entries):
        raise InputError(
            f"{run_dir} is not empty and holds no univid run; choose a new or empty --out"
        )
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    print(
        f"univid: {run_dir} held a run that stopped before its first checkpoint (nothing trained "
        "to keep); starting it over",
        file=sys.stderr,
    )


def _stopped_before_first_checkpoint(run_dir: Path, entries: list[Path]) -> bool:
    """Whether ``run_dir`` holds only what a run writes before its first checkpoint."""
    if not (run_dir / "config.json").is_file():
        return False
    for p in entries:
        if p.name == "checkpoints":
            if not p.is_dir() or any(not c.name.startswith(".tmp_step_") for c in p.iterdir()):
                return False
        elif p.name not in EARLY_FILES and not (p.name.startswith(".") and p.name.endswith(".tmp")):
            return False
    return True
