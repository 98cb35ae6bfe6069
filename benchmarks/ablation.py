"""The backbone ablation: encoder (time token / time added) vs dit (adaLN-Zero / shared adaLN).

Every variant has the same parameter count (within 1 %) and trains for the same number of FLOPs
(counted with torch.utils.flop_counter), on the shapes world, for several seeds. ``run`` trains
and evaluates every (variant, seed) and is safe to re-run: finished runs are skipped, unfinished
ones resume from their last checkpoint. ``report`` writes the table, a JSON summary and the plot.

    python benchmarks/ablation.py run --out runs/ablation --budget-tflop 40 --seeds 0 1 --jobs 2
    python benchmarks/ablation.py report --out runs/ablation --doc docs/ablations
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from univid.build import build_model
from univid.config import resolve_config
from univid.info import count_flops, parameter_counts

PRESET = "shapes-tiny"
# Shared by every variant: the bundled recipe at width 128, one thread per run.
COMMON = [
    "model.width=128",
    "model.heads=4",
    "train.ema_decay=0.995",
    "train.sample_every=0",
    "train.keep_last=1",
    "train.threads=1",
]
# Equal parameters: adaLN-Zero spends 6 D^2 per block on modulation, so the per-block variant
# has 4 layers instead of 6; the MLP ratios absorb the rest (pooled-text and final modulation).
VARIANTS = {
    "encoder-token": [
        "model.backbone=encoder",
        "model.time_mode=token",
        "model.depth=6",
        "model.mlp_ratio=4",
    ],
    "encoder-add": [
        "model.backbone=encoder",
        "model.time_mode=token+add",
        "model.depth=6",
        "model.mlp_ratio=4",
    ],
    "dit-adaln": [
        "model.backbone=dit",
        "model.adaln=block",
        "model.depth=4",
        "model.mlp_ratio=3.4",
    ],
    "dit-shared": [
        "model.backbone=dit",
        "model.adaln=shared",
        "model.depth=6",
        "model.mlp_ratio=3.1",
    ],
}
TEXT_TOKENS = 14  # typical MiniLM length of a shapes caption, used for the FLOP count
VAL_POINTS = 10


def plan(budget_tflop: float, seeds: list[int], out: Path) -> list[dict]:
    """Seed-major list of runs: every variant's first seed finishes before any second seed."""
    variants = {}
    for name, overrides in VARIANTS.items():
        cfg = resolve_config(PRESET, [*COMMON, *overrides])
        d = cfg.data
        step_flops = cfg.train.batch_size * count_flops(
            cfg, d.frames, d.height, d.width, TEXT_TOKENS, backward=True
        )
        steps = round(budget_tflop * 1e12 / step_flops)
        params = parameter_counts(build_model(cfg.model))
        variants[name] = (overrides, step_flops, steps, params)
    runs = []
    for seed in seeds:
        for name, (overrides, step_flops, steps, params) in variants.items():
            run_dir = out / f"{name}-s{seed}"
            val_every = max(1, round(steps / VAL_POINTS))
            extra = [
                f"train.seed={seed}",
                f"train.steps={steps}",
                f"train.val_every={val_every}",
                f"train.ckpt_every={val_every * 2}",
            ]
            train = ["univid", "train", PRESET, *COMMON, *overrides, *extra, "--out", str(run_dir)]
            evaluate = ["univid", "eval", "--model", str(run_dir), "--seeds", "2"]
            evaluate += ["--out", str(run_dir / "eval.json")]
            runs.append(
                {
                    "variant": name,
                    "seed": seed,
                    "dir": str(run_dir),
                    "steps": steps,
                    "step_flops": step_flops,
                    "params": params["total"],
                    "params_modulation": params["modulation"],
                    "train": train,
                    "eval": evaluate,
                }
            )
    return runs


def execute(run: dict) -> str:
    run_dir = Path(run["dir"])
    if (run_dir / "eval.json").is_file():
        return f"{run_dir.name}: done before"
    start = time.perf_counter()
    train = run["train"]
    if (run_dir / "config.json").is_file():
        train = ["univid", "train", "--resume", str(run_dir)]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.log", "a", encoding="utf-8") as log:
        for command in (train, run["eval"]):
            argv = [sys.executable, "-m", "univid", *command[1:]]  # this Python's univid
            subprocess.run(argv, stdout=log, stderr=log, check=True)
    return f"{run_dir.name}: {time.perf_counter() - start:.0f} s"


def cmd_run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    runs = plan(args.budget_tflop, args.seeds, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(runs, indent=2), encoding="utf-8")
    with open(out / "commands.sh", "w", encoding="utf-8") as f:
        for run in runs:
            f.write(shlex.join(run["train"]) + "\n" + shlex.join(run["eval"]) + "\n")
    print(f"{len(runs)} runs, commands in {out / 'commands.sh'}", flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        for message in pool.map(execute, runs):
            print(f"[{time.perf_counter() - start:6.0f} s] {message}", flush=True)


def read_run(run: dict) -> dict:
    run_dir = Path(run["dir"])
    with open(run_dir / "metrics.csv", encoding="utf-8") as f:
        every = list(csv.DictReader(f))
    rows = [r for r in every if r.get("val_loss_ema")]
    report = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    return {
        **run,
        "flops": [int(r["step"]) * run["step_flops"] for r in rows],
        "val_loss": [float(r["val_loss"]) for r in rows],
        "val_loss_ema": [float(r["val_loss_ema"]) for r in rows],
        "accuracy": report["accuracy"],
        "final_val_loss": report["validation"]["val_loss"],  # the exported (EMA) weights
        "train_s": max(float(r["elapsed_s"]) for r in every),
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cmd_report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, doc = Path(args.out), Path(args.doc)
    runs = [read_run(r) for r in json.loads((out / "plan.json").read_text(encoding="utf-8"))]
    doc.parent.mkdir(parents=True, exist_ok=True)
    summary, lines = {}, []
    lines.append(
        "| variant | params | modulation params | steps | train TFLOP | val loss (EMA) "
        "| all-three accuracy | colour | shape | direction | per seed: val loss / all-three |"
    )
    lines.append("|---" * 11 + "|")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for k, name in enumerate(VARIANTS):
        group = [r for r in runs if r["variant"] == name]
        final = [r["final_val_loss"] for r in group]
        acc = {key: [r["accuracy"][key] for r in group] for key in group[0]["accuracy"]}
        first = group[0]
        summary[name] = {
            "params": first["params"],
            "params_modulation": first["params_modulation"],
            "steps": first["steps"],
            "train_flops": first["steps"] * first["step_flops"],
            "val_loss_ema": final,
            "accuracy": acc,
            "train_s": [r["train_s"] for r in group],
        }
        vl, vs = mean_std(final)
        cells = {
            key: "{:.1f} ± {:.1f} %".format(*(100 * v for v in mean_std(acc[key]))) for key in acc
        }
        seeds = ", ".join(
            f"s{r['seed']}: {r['final_val_loss']:.4f} / {100 * r['accuracy']['all_three']:.1f} %"
            for r in group
        )
        lines.append(
            f"| {name} | {first['params'] / 1e6:.3f} M | {first['params_modulation'] / 1e6:.3f} M "
            f"| {first['steps']} | {first['steps'] * first['step_flops'] / 1e12:.1f} "
            f"| {vl:.4f} ± {vs:.4f} | {cells['all_three']} | {cells['colour']} "
            f"| {cells['shape']} | {cells['direction']} | {seeds} |"
        )
        colour = f"C{k}"
        for j, r in enumerate(group):
            ax_loss.plot(
                [f / 1e12 for f in r["flops"]],
                r["val_loss_ema"],
                color=colour,
                alpha=0.9,
                linestyle="-" if j == 0 else "--",
                label=name if j == 0 else None,
            )
        am, asd = mean_std(acc["all_three"])
        ax_acc.bar(k, 100 * am, yerr=100 * asd, color=colour, capsize=4)
        ax_acc.scatter([k] * len(group), [100 * a for a in acc["all_three"]], color="k", s=10)
    ax_loss.set_xlabel("training TFLOP")
    ax_loss.set_ylabel("validation loss (EMA weights)")
    ax_loss.set_yscale("log")
    ax_loss.set_title("validation loss vs compute (solid/dashed: seeds)")
    ax_loss.legend()
    ax_acc.set_xticks(range(len(VARIANTS)), list(VARIANTS), rotation=15)
    ax_acc.set_ylabel("all-three accuracy (%)")
    ax_acc.set_title("univid eval, 84 prompts x 2 seeds")
    fig.tight_layout()
    fig.savefig(doc.with_suffix(".png"), dpi=110)
    doc.with_suffix(".json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train and evaluate every variant and seed")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--budget-tflop", type=float, default=40.0, help="training FLOPs per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="table, JSON and plot from finished runs")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--doc", default="docs/ablations", help="writes DOC.png and DOC.json")
    p.set_defaults(func=cmd_report)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
