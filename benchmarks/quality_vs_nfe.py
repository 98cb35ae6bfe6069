"""Quality against sampling cost: `univid eval` accuracy of a model across solvers, step counts,
time shifts and step-cache thresholds.

Each setting generates and judges ``--seeds`` videos of each of the 84 shapes-world prompts (the
same seeds for every setting, from ``--seed-offset``: by default the unseen range of `univid
eval`) and prints one JSON line: the all-correct rate with its Wilson 95 % interval, failures by
kind, per-attribute accuracies, network forwards per batch (NFE; with the step cache, the
forwards actually run) and the sampling wall time.

    python benchmarks/quality_vs_nfe.py --seeds 2 > docs/quality_vs_nfe.jsonl
    python benchmarks/quality_vs_nfe.py --plot docs/quality_vs_nfe.jsonl   # table + PNG
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from univid.eval.report import EVAL_SEED_OFFSET

STEPS = (2, 4, 8, 16, 32)


GROUPS = ("euler", "shift", "midpoint", "heun", "cache")


def settings(cache_steps: int, groups: list[str], nfes: tuple[int, ...]) -> list[dict]:
    """Solvers at equal NFE, the shifted schedule, and step-cache thresholds."""
    rows = []
    if "euler" in groups:
        rows += [{"solver": "euler", "steps": s, "shift": 1.0} for s in nfes]
    if "shift" in groups:
        rows += [{"solver": "euler", "steps": s, "shift": 3.0} for s in nfes]
    if "midpoint" in groups:
        rows += [{"solver": "midpoint", "steps": s // 2, "shift": 1.0} for s in nfes]
    if "heun" in groups:
        rows += [{"solver": "heun", "steps": (s + 1) // 2, "shift": 1.0} for s in nfes]
    if "cache" in groups:
        rows += [
            {"solver": "euler", "steps": cache_steps, "shift": 1.0, "step_cache": threshold}
            for threshold in (0.1, 0.2, 0.3)
        ]
    return rows


def measure(args: argparse.Namespace) -> None:
    from univid.eval.report import run_eval
    from univid.flow import nfe
    from univid.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, device="cpu")
    for setting in settings(args.cache_steps, args.groups.split(","), tuple(args.nfe)):
        setting = {"step_cache": 0.0, **setting}
        seconds, forwards = 0.0, []

        def generate(prompts, seeds, setting=setting, forwards=forwards):
            nonlocal seconds
            start = time.perf_counter()
            videos = pipe.generate(
                prompts,
                seeds,
                num_steps=setting["steps"],
                solver=setting["solver"],
                shift=setting["shift"],
                step_cache=setting["step_cache"],
            )
            seconds += time.perf_counter() - start
            cache = pipe.last_cache
            forwards.append(cache.computed if cache else nfe(setting["solver"], setting["steps"]))
            return videos

        report, _ = run_eval(
            generate,
            args.seeds,
            batch_size=args.batch_size,
            progress=False,
            seed_offset=args.seed_offset,
        )
        row = {
            "model": args.model,
            **setting,
            "nfe": nfe(setting["solver"], setting["steps"]),
            "forwards": sum(forwards) / len(forwards),
            "sampling_s": round(seconds, 2),
            "videos": report["num_videos"],
            "seed_offset": args.seed_offset,
            **{k: round(v, 4) for k, v in report["accuracy"].items()},
            "wilson95": [round(v, 4) for v in report["all_correct_wilson95"]],
            "failures": report["failures"],
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(row), flush=True)


def time_cache(args: argparse.Namespace) -> None:
    """Wall time of one batch with and without the step cache, alternating runs (median)."""
    import statistics

    from univid.data.shapes import all_prompts, canonical_prompt
    from univid.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, device="cpu")
    prompts = [canonical_prompt(*p) for p in all_prompts()][: args.batch_size]
    seeds = list(range(len(prompts)))
    thresholds = [0.0, *args.thresholds]
    times: dict[float, list[float]] = {th: [] for th in thresholds}
    skipped: dict[float, int] = {}
    for _ in range(args.repeats + 1):  # the first round warms up and is dropped
        for th in thresholds:
            start = time.perf_counter()
            pipe.generate(prompts, seeds, num_steps=args.cache_steps, step_cache=th)
            times[th].append(time.perf_counter() - start)
            skipped[th] = pipe.last_cache.skipped if pipe.last_cache else 0
    base = statistics.median(times[0.0][1:])
    for th in thresholds:
        median = statistics.median(times[th][1:])
        row = {
            "bench": "step_cache_timing",
            "model": args.model,
            "steps": args.cache_steps,
            "step_cache": th,
            "batch": len(prompts),
            "skipped": skipped[th],
            "median_s": round(median, 3),
            "speedup": round(base / median, 3),
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(row), flush=True)


def plot(path: Path) -> None:
    """Markdown tables on stdout and a PNG of all-three accuracy against NFE next to the JSONL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    plain = [r for r in rows if not r["step_cache"]]
    cached = [r for r in rows if r["step_cache"]]
    # Wall times are left out: settings run minutes apart on a shared machine; the step cache's
    # speed-up is timed on its own with --time-cache.
    print(
        "| solver | shift | steps | NFE | all correct | 95 % interval | extra object | size "
        "| other failures | colour | shape | direction |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in plain:
        failures = r["failures"]
        other = sum(failures.values()) - failures["extra_object"] - failures["size"]
        low, high = r["wilson95"]
        print(
            f"| {r['solver']} | {r['shift']:g} | {r['steps']} | {r['nfe']} | "
            f"{100 * r['all_correct']:.1f} | {100 * low:.1f}–{100 * high:.1f} | "
            f"{failures['extra_object']} | {failures['size']} | {other} | "
            f"{100 * r['colour']:.1f} | {100 * r['shape']:.1f} | {100 * r['direction']:.1f} |"
        )
    if cached:
        base = next(
            r
            for r in plain
            if r["solver"] == "euler" and r["shift"] == 1.0 and r["steps"] == cached[0]["steps"]
        )
        print("\n| step cache | steps | forwards run | all correct | 95 % interval |")
        print("|---|---|---|---|---|")
        for r in [base, *cached]:
            low, high = r["wilson95"]
            print(
                f"| {r['step_cache']:g} | {r['steps']} | {r['forwards']:.1f} | "
                f"{100 * r['all_correct']:.1f} | {100 * low:.1f}–{100 * high:.1f} |"
            )
    fig, ax = plt.subplots(figsize=(6, 4))
    for (solver, shift), marker in zip(
        (("euler", 1.0), ("euler", 3.0), ("midpoint", 1.0), ("heun", 1.0)), "osD^"
    ):
        line = [r for r in plain if r["solver"] == solver and r["shift"] == shift]
        label = solver + (f", shift {shift:g}" if shift != 1.0 else "")
        ax.plot(
            [r["nfe"] for r in line],
            [100 * r["all_correct"] for r in line],
            marker=marker,
            label=label,
        )
    if cached:
        ax.plot(
            [r["forwards"] for r in cached],
            [100 * r["all_correct"] for r in cached],
            "kx",
            label=f"euler {cached[0]['steps']} steps + step cache",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("network forwards per video (NFE)")
    ax.set_ylabel("all correct (%)")
    ax.set_title(f"{rows[0]['model']}: quality against sampling cost")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-tiny")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per prompt (84 prompts)")
    parser.add_argument(
        "--seed-offset", type=int, default=EVAL_SEED_OFFSET, help="first seed (unseen range)"
    )
    parser.add_argument("--batch-size", type=int, default=42)
    parser.add_argument("--cache-steps", type=int, default=32, help="steps of the cache runs")
    parser.add_argument("--plot", type=Path, help="summarise a JSONL written earlier")
    parser.add_argument("--groups", default=",".join(GROUPS), help=", ".join(GROUPS))
    parser.add_argument("--nfe", type=int, nargs="+", default=list(STEPS), help="NFE budgets")
    parser.add_argument(
        "--time-cache", action="store_true", help="only time one batch with/without the cache"
    )
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.plot:
        plot(args.plot)
        return
    if args.time_cache:
        time_cache(args)
        return
    measure(args)


if __name__ == "__main__":
    sys.exit(main())
