"""Run by the distributed tests under torchrun: a tiny training run, optionally with bad samples.

torchrun --nproc_per_node=2 tests/dist_worker.py RUN_DIR [--bad I,J,...] [override ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from univid.config import resolve_config
from univid.data import BadSample
from univid.data.shapes import ShapesWorld
from univid.train import train


class WorldWithBadClips(ShapesWorld):
    """The shapes world, except that the listed clip indices cannot be decoded."""

    def __init__(self, bad: set[int], **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.bad = bad

    def __getitem__(self, index: int):
        if index in self.bad:
            raise BadSample(f"clip {index} is corrupt (planted by the test)")
        return super().__getitem__(index)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--bad", default="")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    cfg = resolve_config("tiny", args.overrides)
    d = cfg.data
    bad = {int(i) for i in args.bad.split(",") if i}
    world = WorldWithBadClips(bad, frames=d.frames, height=d.height, width=d.width, seed=0)
    train(cfg, Path(args.run_dir), progress=False, dataset=world)


if __name__ == "__main__":
    main()
