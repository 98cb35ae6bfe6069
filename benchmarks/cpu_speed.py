"""CPU speed of the core loop: one training step and one single-video generation.

Prints one JSON line per measurement (median of repeated timed runs after warm-up):

    python benchmarks/cpu_speed.py [--preset shapes-tiny] [--model shapes-tiny] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

from univid.bench.measure import host, time_stats, timed
from univid.config import resolve_config
from univid.pipeline import Pipeline
from univid.train.loop import Trainer


def emit(name: str, times: list[float], **extra: object) -> None:
    stats = {k: round(v, 4) for k, v in time_stats(times).items()}
    env = host()
    row = {"threads": env["threads"], "torch": env["torch"], "cpu": env["cpu"], **extra}
    print(json.dumps({"bench": name, **stats, **row}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes-tiny", help="config whose train step is timed")
    parser.add_argument("--model", default="shapes-tiny", help="model whose sampling is timed")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    cfg = resolve_config(args.preset, ["train.device=cpu"])
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, run_dir, progress=False)
        times = timed(trainer.train_step, args.repeats, warmup=2)
    m, d = cfg.model, cfg.data
    tokens = (d.frames // m.patch[0]) * (d.height // m.patch[1]) * (d.width // m.patch[2])
    emit(
        "train_step",
        times,
        preset=args.preset,
        batch_size=cfg.train.batch_size,
        video_tokens=tokens,
        clips_per_s=round(cfg.train.batch_size / statistics.median(times), 2),
    )

    pipe = Pipeline.from_pretrained(args.model, device="cpu")
    seeds = iter(range(10**9))
    times = timed(
        lambda: pipe("a red circle moving right", seed=next(seeds)), args.repeats, warmup=2
    )
    emit(
        "generate_one_video",
        times,
        model=args.model,
        steps=pipe.config.flow.sample_steps,
        guidance=pipe.config.flow.guidance,
        forwards_per_step=1,
        batch_per_forward=2 if pipe.config.flow.guidance != 1 else 1,
    )


if __name__ == "__main__":
    main()
