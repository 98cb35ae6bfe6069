"""Crash-safe, sharded checkpoints through ``torch.distributed.checkpoint`` (DCP).

A checkpoint is a folder ``checkpoints/step_XXXXXXXX`` holding

    state/*.safetensors   model, EMA and optimizer tensors, one file per rank, written by DCP's
                          Hugging Face storage writer (shard offsets live in the safetensors
                          header, so a checkpoint loads onto any number of ranks)
    trainer.json          step, samples consumed, LR schedule, optimizer hyper-parameters
    rng/rank_R.json       every random generator of rank R (torch, CUDA, numpy, python)
    config.json           the run's config
    COMPLETE              written last

Nothing in it needs unpickling. Every rank writes into a temporary folder; after a barrier,
rank 0 flushes everything to disk, writes the marker and renames the folder, so a crash never
leaves a half checkpoint under a real name; older checkpoints are deleted only after the new one
is complete. The run folder also gets the consolidated EMA weights (``model.safetensors``) and
``config.json``, so ``univid generate --model RUN_DIR`` works at any time.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from tqdm.auto import tqdm

from univid.config import config_from_dict
from univid.errors import ConfigError, CorruptFileError, InputError
from univid.files import (
    atomic_write,
    causes,
    fsync,
    read_json,
    signals_held,
    storage_error,
    writing,
)
from univid.lora import adapter_tensors, save_adapter
from univid.parallel import Dist

MARKER = "COMPLETE"
FORMAT = 2
CRASH_ENV = "UNIVID_CRASH_AT"
INTERRUPT_ENV = "UNIVID_INTERRUPT_AT"
# Signals that wait while a checkpoint is written: Ctrl-C, and the polite stop of schedulers
# (which send SIGKILL only after a grace period). The checkpoint is safe either way (it is
# published by a rename); waiting means the steps it holds are not lost.


def crash_point(point: str, step: int) -> None:
    """Fault injection for crash tests, as torchft does: ``UNIVID_CRASH_AT=POINT:STEP`` kills
    this process with SIGKILL when it reaches POINT at STEP; ``UNIVID_INTERRUPT_AT=POINT:STEP``
    sends it SIGINT (Ctrl-C) there, ``UNIVID_INTERRUPT_AT=POINT:STEP@SIGTERM`` the signal named.
    Points: ``step`` (after step STEP is logged), ``checkpoint`` (shards written, no marker yet),
    ``published`` (checkpoint renamed, before the weights export and the pruning of old
    checkpoints)."""
    if os.environ.get(CRASH_ENV) == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
    where, _, name = os.environ.get(INTERRUPT_ENV, "").partition("@")
    if where == f"{point}:{step}":
        os.kill(os.getpid(), getattr(signal, name or "SIGINT"))


def deferred_signals(step: int) -> AbstractContextManager[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them as they would have been:
    a checkpoint being written is finished first. A second Ctrl-C stops at once (the temporary
    folder is removed; the older checkpoints are intact)."""

    def say() -> None:
        tqdm.write(  # on a line of its own, above the progress bar
            f"univid: finishing checkpoint {step} before stopping (Ctrl-C again to stop now)",
            file=sys.stderr,
        )

    return signals_held(say)


def _tensor_state(
    model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """DCP's view of the run: (tensors keyed by plain parameter names, optimizer groups).

    Frozen weights (a LoRA run's base) are left out, of the model and of its EMA alike: a
    fine-tuning run's checkpoints hold its adapters and their optimizer state only."""
    model_state, optim_state = get_state_dict(
        model, optimizer, options=StateDictOptions(ignore_frozen_params=True)
    )
    ema_state = get_model_state_dict(ema)
    tensors = {
        "model": model_state,
        "ema": {k: v for k, v in ema_state.items() if k in model_state},
        "optim": optim_state["state"],
    }
    return tensors, optim_state["param_groups"]


def _frozen(model: nn.Module) -> bool:
    """Whether ``model`` has frozen weights that its checkpoints leave out."""
    return any(not p.requires_grad for p in model.parameters())


@contextmanager
def _one_process_is_fine() -> Iterator[None]:
    """Silence DCP's warning that it runs without a process group: a one-process run does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def rng_state() -> dict[str, Any]:
    """This process's random generators as JSON-able values."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_version, list(py_internal), py_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_checkpoint(
    run_dir: Path,
    info: Dist,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    config_json: str,
    keep_last: int,
) -> Path:
    """Write checkpoint ``trainer_state['step']`` (a collective: every rank calls it).

    Ctrl-C and SIGTERM wait until it is written. When it fails (a full disk is one line naming
    the file), its temporary folder is removed and the older checkpoints stay as they were."""
    step = int(trainer_state["step"])
    final, tmp = _folders(run_dir, step)
    with deferred_signals(step):
        try:
            return _save_checkpoint(
                run_dir,
                final,
                tmp,
                info,
                model,
                ema,
                optimizer,
                trainer_state,
                config_json,
                keep_last,
            )
        except BaseException as exc:
            if info.main:
                shutil.rmtree(tmp, ignore_errors=True)
            error = storage_error(exc, tmp)
            if error is not None:
                raise error from None
            if not isinstance(exc, KeyboardInterrupt) and any(
                isinstance(e, KeyboardInterrupt) for e in causes(exc)
            ):  # DCP wraps an interrupt that lands inside it
                raise KeyboardInterrupt from None
            raise


def _folders(run_dir: Path, step: int) -> tuple[Path, Path]:
    """Checkpoint ``step``'s folder, and the temporary folder it is written in."""
    root = run_dir / "checkpoints"
    return root / f"step_{step:08d}", root / f".tmp_step_{step:08d}"


def _save_checkpoint(
    run_dir: Path,
    final: Path,
    tmp: Path,
    info: Dist,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    config_json: str,
    keep_last: int,
) -> Path:
    root = final.parent
    step = int(trainer_state["step"])
    if info.main:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    info.barrier()
    tensors, groups = _tensor_state(model, ema, optimizer)
    writer = HuggingFaceStorageWriter(str(tmp / "state"), save_distributed=True)
    with _one_process_is_fine():
        dcp.save(tensors, storage_writer=writer, no_dist=not dist.is_initialized())
    rng_path = tmp / "rng" / f"rank_{info.rank}.json"
    rng_path.write_text(json.dumps(rng_state()), encoding="utf-8")
    fsync(rng_path)
    crash_point("checkpoint", step)
    info.barrier()
    if info.main:
        meta = {"format": FORMAT, **trainer_state, "param_groups": groups}
        (tmp / "trainer.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        (tmp / "config.json").write_text(config_json, encoding="utf-8")
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync(f)
        (tmp / MARKER).write_text(str(step), encoding="utf-8")
        fsync(tmp / MARKER)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync(root)
    crash_point("published", step)
    export_weights(run_dir, info, ema, config_json)
    if info.main:
        for old in complete_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old)
    info.barrier()
    return final


def export_weights(run_dir: Path, info: Dist, module: nn.Module, config_json: str) -> None:
    """Consolidate ``module``'s (maybe sharded) weights into one plain safetensors file; a
    LoRA run's into its adapter files (the base is never written)."""
    full = get_model_state_dict(
        module, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if not info.main:
        return
    adapter = adapter_tensors(full)
    if adapter:
        save_adapter(run_dir, adapter, config_from_dict(json.loads(config_json)))
    else:
        state = {k: v.contiguous() for k, v in full.items()}
        with writing(run_dir / "model.safetensors"):
            atomic_write(run_dir / "model.safetensors", lambda p: save_file(state, p))
    atomic_write(run_dir / "config.json", lambda p: p.write_text(config_json, encoding="utf-8"))


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints that carry the completion marker, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if (p / MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


# Config keys a resumed run may change: how long it runs, how often it logs, validates, samples
# and saves, where and how fast it computes, how it samples its previews. The others define the
# model, its data stream or its optimisation; train.batch_size and train.grad_accum may change
# only with the number of ranks, keeping the global batch (the data stream) the same.
RESUMABLE = (
    "train.steps",
    "train.log_every",
    "train.sample_every",
    "train.ckpt_every",
    "train.val_every",
    "train.val_clips",
    "train.keep_last",
    "train.max_nonfinite",
    "train.spike_factor",
    "train.threads",
    "train.device",
    "train.precision",
    "train.activation_checkpointing",
    "train.compile",
    "data.prefetch",
    "data.max_bad_fraction",
    "flow.sample_steps",
    "flow.solver",
    "flow.step_cache",
    "flow.shift",
    "flow.guidance",
    "parallel.",
)
BATCH_KEYS = ("train.batch_size", "train.grad_accum")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resume(path: Path, config_json: str, global_batch: int) -> None:
    """Refuse, in one line listing them, config changes that a resume from checkpoint ``path``
    would make silently: anything but the :data:`RESUMABLE` keys, and a new global batch."""
    if not (path / "config.json").is_file():
        return
    # Read through the config classes: a key added to univid since the checkpoint was saved
    # takes its default, as it does when the run's config is loaded.
    saved = _flat(json.loads(config_from_dict(read_json(path / "config.json")).to_json()))
    now = _flat(json.loads(config_json))
    changed = [
        k
        for k in sorted(saved.keys() | now.keys())
        if saved.get(k) != now.get(k) and not k.startswith(RESUMABLE)
    ]
    meta = read_json(path / "trainer.json") if (path / "trainer.json").is_file() else {}
    if meta.get("global_batch", global_batch) == global_batch:
        changed = [k for k in changed if k not in BATCH_KEYS]
    elif not any(k in BATCH_KEYS for k in changed):
        changed.append("the global batch (ranks x train.batch_size x train.grad_accum)")
    if changed:
        what = ", ".join(
            f"{k} {saved[k]!r} -> {now[k]!r}" if k in saved and k in now else k for k in changed
        )
        raise ConfigError(
            f"cannot resume from {path}: {what} changed since it was saved, which would change "
            "the run without a word; resume without these changes, or start a new run in "
            "another --out"
        )


def load_checkpoint(
    path: Path,
    info: Dist,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> dict[str, Any]:
    """Restore model, EMA, optimizer and this rank's RNG; returns trainer.json's contents.

    Any layout of ranks loads any other: DCP reads the slices each rank needs."""
    meta_path = path / "trainer.json"
    if not meta_path.is_file() or not (path / "state").is_dir():
        raise InputError(f"checkpoint {path} is not a univid checkpoint (no trainer.json/state)")
    meta = read_json(meta_path)
    if meta.get("format") != FORMAT:
        raise InputError(f"checkpoint {path} has format {meta.get('format')}, expected {FORMAT}")
    shards = sorted((path / "state").glob("*.safetensors"))
    if not shards:
        raise InputError(f"checkpoint {path} has no tensor shards in state/")
    for shard in shards:  # headers only: a damaged file fails here with its name
        try:
            with safe_open(shard, framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError) as exc:
            raise CorruptFileError(f"cannot read {shard} as safetensors: {exc}") from None
    tensors, _ = _tensor_state(model, ema, optimizer)
    try:
        with _one_process_is_fine():
            dcp.load(
                tensors,
                storage_reader=HuggingFaceStorageReader(str(path / "state")),
                no_dist=not dist.is_initialized(),
            )
    except (Exception, CheckpointException) as exc:  # DCP wraps each rank's failure
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        # A checkpoint of another model shape lands here (missing or wrong-sized tensors).
        raise InputError(f"cannot load checkpoint {path}: {first}") from None
    partial = _frozen(model)  # the frozen base came from lora.base, not from here
    set_state_dict(
        model,
        optimizer,
        model_state_dict=tensors["model"],
        optim_state_dict={"state": tensors["optim"], "param_groups": meta["param_groups"]},
        options=StateDictOptions(ignore_frozen_params=True, strict=not partial),
    )
    set_model_state_dict(ema, tensors["ema"], options=StateDictOptions(strict=not partial))
    rng_path = path / "rng" / f"rank_{info.rank}.json"
    if rng_path.is_file():
        set_rng_state(read_json(rng_path))
    elif meta.get("world") == info.world:  # only a resume on more ranks may lack it
        raise InputError(f"checkpoint {path} is missing rng/{rng_path.name}")
    return meta
