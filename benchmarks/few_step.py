"""Few-step students against their teacher: quality in every mode, and sampling time.

``--quality`` judges each model at each step count in each mode with `univid eval`'s judge
(``--seeds`` videos of each of the 84 prompts from ``--seed-offset``, the same seeds for every
row) and prints one JSON line per (model, mode, steps): the all-correct rate with its Wilson 95 %
interval, the failures by kind and the sampling time. A model is ``NAME=FOLDER`` (or a bundled
name); a teacher is sampled with its own guidance, a student with its guidance built in.

``--speed`` times one call of the pipeline per setting (teacher at ``--teacher-steps``, each
student at each of its step counts) at batch 1 and batch 16, ``--repeats`` times, the settings
in turn within each repeat so drift on a shared machine hits them alike, and prints the median
seconds per video of each, with the CPU flags and threads.

    python benchmarks/few_step.py --quality --model teacher=shapes-tiny \\
        --model student=runs/avg --seeds 4 --seed-offset 3000000 > docs/few_step_quality.jsonl
    python benchmarks/few_step.py --speed --model teacher=shapes-tiny --model student=runs/avg \\
        > docs/few_step_speed.jsonl
    python benchmarks/few_step.py --table docs/few_step_quality.jsonl docs/few_step_speed.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

PROMPT = "a red ball moves right"


def models(specs: list[str]) -> dict[str, str]:
    """NAME=FOLDER (or a bundled name alone) -> {name: folder}."""
    return dict(s.split("=", 1) if "=" in s else (s, s) for s in specs)


def step_counts(pipe, teacher_steps: int, student_steps: list[int]) -> list[int]:
    """A teacher's step count, or the counts a student samples with."""
    from univid.pipeline import student_steps as allowed

    if not pipe.config.distill.method:
        return [teacher_steps]
    counts = allowed(pipe.config)
    return [s for s in student_steps if counts is None or s in counts]


def quality(args: argparse.Namespace) -> None:
    from univid.config.sections import EVAL_MODES
    from univid.eval.run import evaluate
    from univid.pipeline import Pipeline

    for name, folder in models(args.model).items():
        pipe = Pipeline.from_pretrained(folder, device="cpu")
        for mode in args.modes.split(",") if args.modes else EVAL_MODES:
            if mode not in EVAL_MODES:
                raise SystemExit(f"--modes: {mode} is not one of {', '.join(EVAL_MODES)}")
            for steps in step_counts(pipe, args.teacher_steps, args.steps):
                report, _ = evaluate(
                    pipe,
                    model=folder,
                    seeds=args.seeds,
                    seed_offset=args.seed_offset,
                    steps=steps,
                    mode=mode,
                    progress=False,
                )
                s = report["settings"]
                row = {
                    "model": name,
                    "folder": folder,
                    "method": pipe.config.distill.method or "teacher",
                    "mode": mode,
                    "steps": steps,
                    "guidance": s["guidance"],
                    "videos": args.seeds * 84,
                    "seed_offset": args.seed_offset,
                    "all_correct": report["accuracy"]["all_correct"],
                    "wilson95": report["all_correct_wilson95"],
                    "failures": {k: v for k, v in report["failures"].items() if v},
                    "precision": s["precision"],
                    "sampling_s": s["sampling_seconds"],
                }
                print(json.dumps(row), flush=True)


def speed(args: argparse.Namespace) -> None:
    from univid.device import autocast_dtype, cpu_flags, precision_name
    from univid.pipeline import Pipeline

    torch.set_num_threads(args.threads)
    settings = []
    for name, folder in models(args.model).items():
        pipe = Pipeline.from_pretrained(folder, device="cpu")
        for steps in step_counts(pipe, args.teacher_steps, args.steps):
            for batch in (1, 16):
                settings.append((name, pipe, steps, batch))
    times: dict[tuple[str, int, int], list[float]] = {}
    for setting in settings:  # one warm-up call each (first-call allocations)
        _, pipe, steps, batch = setting
        pipe(PROMPT, num_steps=steps, num_videos=batch)
    for _ in range(args.repeats):
        for name, pipe, steps, batch in settings:
            start = time.perf_counter()
            pipe(PROMPT, num_steps=steps, num_videos=batch, seed=len(times))
            times.setdefault((name, steps, batch), []).append(time.perf_counter() - start)
    for (name, steps, batch), seconds in times.items():
        median = statistics.median(seconds)
        row = {
            "model": name,
            "steps": steps,
            "batch": batch,
            "repeats": len(seconds),
            "median_s_per_call": round(median, 4),
            "median_s_per_video": round(median / batch, 4),
            "videos_per_s": round(batch / median, 2),
            "threads": torch.get_num_threads(),
            "precision": precision_name(autocast_dtype(pipe.precision, pipe.device)),
            "cpu_flags": cpu_flags(),
        }
        print(json.dumps(row), flush=True)


def table(paths: list[str]) -> None:
    """Markdown tables of the JSON lines of --quality and --speed."""
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line]
    good = [r for r in rows if "all_correct" in r]
    if good:
        modes = list(dict.fromkeys(r["mode"] for r in good))
        print("| model | steps | " + " | ".join(modes) + " |")
        print("|---|---|" + "---|" * len(modes))
        keys = list(dict.fromkeys((r["model"], r["steps"]) for r in good))
        for model, steps in keys:
            cells = []
            for mode in modes:
                r = next(
                    (
                        r
                        for r in good
                        if (r["model"], r["steps"], r["mode"]) == (model, steps, mode)
                    ),
                    None,
                )
                cells.append(
                    "–"
                    if r is None
                    else f"{100 * r['all_correct']:.1f} % ({100 * r['wilson95'][0]:.1f}–"
                    f"{100 * r['wilson95'][1]:.1f})"
                )
            print(f"| {model} | {steps} | " + " | ".join(cells) + " |")
    fast = [r for r in rows if "median_s_per_video" in r]
    if fast:
        print("\n| model | steps | batch | s per video (median) | videos/s |")
        print("|---|---|---|---|---|")
        for r in fast:
            print(
                f"| {r['model']} | {r['steps']} | {r['batch']} | {r['median_s_per_video']:.4f} | "
                f"{r['videos_per_s']} |"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quality", action="store_true")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--table", nargs="+", metavar="JSONL")
    p.add_argument("--model", action="append", default=[], help="NAME=FOLDER or a bundled name")
    p.add_argument("--modes", default="", help="comma-separated (default: every mode)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4], help="student steps")
    p.add_argument("--teacher-steps", type=int, default=25)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--seed-offset", type=int, default=3_000_000)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.table:
        table(args.table)
    elif not args.model:
        sys.exit("give --model NAME=FOLDER (one or more)")
    elif args.quality:
        quality(args)
    elif args.speed:
        speed(args)
    else:
        sys.exit("give --quality, --speed or --table")


if __name__ == "__main__":
    main()
