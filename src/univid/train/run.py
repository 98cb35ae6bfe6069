"""Starting a training run: its data and config, a new run or a resumed one, on one or many ranks.

The policy of ``univid train`` lives here, not in the CLI: a fresh run needs an empty folder; a
run is resumed from its newest complete checkpoint; ``--resume latest`` does either.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from univid.config import Config, apply_overrides, load_config_file, resolve_config
from univid.errors import InputError
from univid.parallel import close_distributed, torchrun_rank
from univid.train.checkpoint import latest_checkpoint
from univid.train.loop import Trainer


def train(
    cfg: Config,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    dataset: Any = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (or continue it); returns the last metrics row.

    Under torchrun every rank calls this; ``cfg.parallel.mode`` says how they share the work.
    ``dataset`` replaces the config's data (see :func:`univid.train.batches.open_dataset`)."""
    trainer = Trainer(cfg, Path(run_dir), progress=progress, dataset=dataset)
    try:
        if resume:
            path = trainer.resume()
            if trainer.dist.main and progress:
                print(f"univid: resuming from {path} (step {trainer.step})", file=sys.stderr)
        return trainer.run()
    finally:
        trainer.close()
        close_distributed(trainer.dist)


def start_or_resume(
    config: str | None, overrides: list[str], out: str | None, resume: str | None
) -> dict[str, Any]:
    """What ``univid train [CONFIG] [key=value ...] [--out DIR] [--resume DIR|latest]`` does.

    - ``--resume DIR``: continue DIR from its newest complete checkpoint (overrides apply);
    - ``--resume latest --out DIR``: continue DIR if it has a checkpoint, else start it;
    - otherwise start CONFIG in ``--out DIR``, which must be new or empty."""
    if resume == "latest":
        if out is None:
            raise InputError("--resume latest needs --out DIR")
        if latest_checkpoint(Path(out)) is not None:
            resume = out
        elif config is None:
            raise InputError(f"{out} has no complete checkpoint and no CONFIG_OR_PRESET given")
        else:
            return train(resolve_config(config, overrides), Path(out))
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.json").is_file():
            raise InputError(f"cannot resume: {run_dir} is not a training run (no config.json)")
        cfg = apply_overrides(load_config_file(run_dir / "config.json"), overrides)
        return train(cfg, run_dir, resume=True)
    if config is None or out is None:
        raise InputError("train needs CONFIG_OR_PRESET and --out DIR (or --resume DIR)")
    cfg = resolve_config(config, overrides)
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {run_dir} is a file, not a folder")
    # Under torchrun only rank 0 checks: the others could already see its new run folder.
    if torchrun_rank() == 0 and run_dir.exists() and any(run_dir.iterdir()):
        raise InputError(f"{run_dir} is not empty; use --resume {run_dir} to continue that run")
    return train(cfg, run_dir)
