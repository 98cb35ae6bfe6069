"""Text-to-video accuracy against training wall time: the road to a good model, measured.

    python benchmarks/time_to_target.py [--preset shapes-tiny] [--every 1000] [--seeds 1] \
        [--out docs/time_to_target.jsonl] [--keep DIR] [key=value ...]
    python benchmarks/time_to_target.py --plot docs/time_to_target.jsonl docs/time_to_target.png

Trains ``--preset`` (with the overrides) as ``univid train`` does, step by step with its
checkpoints, and every ``--every`` steps judges the EMA weights in text-to-video mode on held-out
seeds (the eval's default offset, never used in training). One JSON line per point: steps, the
training wall time so far (the judging is not counted), the all-correct count of the videos
judged with its Wilson interval, the loss. The performance issue's target: all correct >= 95 %.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from univid.config import resolve_config
from univid.device import autocast_dtype, cpu_flags, precision_name
from univid.eval.run import evaluate
from univid.pipeline import Pipeline
from univid.train.loop import Trainer


def judge(trainer: Trainer, seeds: int, precision: str) -> dict:
    pipe = Pipeline(copy.deepcopy(trainer.ema), trainer.text, trainer.cfg)
    pipe.precision = precision
    report, _ = evaluate(pipe, model="training", seeds=seeds, progress=False)
    return report


def plot(lines: Path, picture: Path) -> None:
    """All-correct (with its interval) against training wall time, one curve per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: list[tuple[dict, list[dict]]] = []
    for line in lines.read_text().splitlines():
        row = json.loads(line)
        if row.get("bench") == "time_to_target":
            runs.append((row, []))
        elif runs:
            runs[-1][1].append(row)
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for head, points in runs:
        if not points:
            continue
        minutes = [p["train_wall_s"] / 60 for p in points]
        acc = [100 * p["all_correct"] / p["videos"] for p in points]
        low = [100 * p["wilson95"][0] for p in points]
        high = [100 * p["wilson95"][1] for p in points]
        extra = [o for o in head["overrides"] if not o.startswith("train.precision=")]
        label = ", ".join([head["preset"], *extra, f"{head['precision']} training"])
        if head.get("stop_at", head["steps"]) < head["steps"]:
            label += f" (stopped at {head['stop_at']:,} of {head['steps']:,} steps)"
        ax.plot(minutes, acc, marker="o", label=label)
        ax.fill_between(minutes, low, high, alpha=0.15)
    ax.axhline(95, color="grey", linestyle="--", linewidth=1, label="target 95 %")
    ax.set_xlabel("training wall time on 2 CPU cores (minutes)")
    ax.set_ylabel("text to video, all correct (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(picture, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", nargs=2, type=Path, metavar=("JSONL", "PNG"))
    parser.add_argument("--preset", default="shapes-tiny")
    parser.add_argument("--every", type=int, default=1000, help="steps between judgements")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per prompt when judging")
    parser.add_argument("--eval-precision", default="fp32", help="precision of the judging")
    parser.add_argument(
        "--stop-at", type=int, default=0, help="stop after this many steps (the schedule stays)"
    )
    parser.add_argument("--out", type=Path, help="also append the lines to this file")
    parser.add_argument(
        "--keep", type=Path, help="keep the judged EMA weights here, one model folder per point"
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.plot:
        plot(*args.plot)
        return
    cfg = resolve_config(args.preset, ["train.device=cpu", *args.overrides])
    t = cfg.train

    def emit(row: dict) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(line + "\n")

    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(cfg, Path(folder), progress=False)
        emit(
            {
                "bench": "time_to_target",
                "preset": args.preset,
                "overrides": args.overrides,
                "precision": precision_name(trainer.amp),
                "steps": t.steps,
                "stop_at": args.stop_at or t.steps,
                "cpu_flags": cpu_flags(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        )
        wall, losses = 0.0, []
        last = min(args.stop_at or t.steps, t.steps)
        while trainer.step < last:
            start = time.perf_counter()
            for _ in range(min(args.every, last - trainer.step)):
                trainer.update()
                if trainer.step % t.log_every == 0:
                    trainer.settle()
                    losses.append(trainer.metrics_row()["loss"])
                if t.ckpt_every and trainer.step % t.ckpt_every == 0:
                    trainer.settle()
                    trainer.save()
            trainer.settle()
            wall += time.perf_counter() - start
            start = time.perf_counter()
            if args.keep:  # the EMA as `univid eval --model` reads it
                if not t.ckpt_every or trainer.step % t.ckpt_every:  # writes model.safetensors
                    trainer.save()
                kept = args.keep / f"step_{trainer.step:08d}"
                kept.mkdir(parents=True, exist_ok=True)
                for name in ("config.json", "model.safetensors"):
                    shutil.copy(Path(folder) / name, kept / name)
            report = judge(trainer, args.seeds, args.eval_precision)
            emit(
                {
                    "step": trainer.step,
                    "train_wall_s": round(wall, 1),
                    "all_correct": report["all_correct"],
                    "wilson95": report["all_correct_wilson95"],
                    "failures": report["failures"],
                    "loss": sum(losses[-4:]) / max(len(losses[-4:]), 1),
                    "videos": len(report["items"]),
                    "judge_s": round(time.perf_counter() - start, 1),
                    "eval_precision": precision_name(
                        autocast_dtype(args.eval_precision, trainer.device)
                    ),
                }
            )
        trainer.close()


if __name__ == "__main__":
    main()
