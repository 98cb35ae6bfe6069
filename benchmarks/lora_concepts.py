"""Teach the bundled model concepts it never saw (orange, diamond): LoRA against full fine-tuning.

    python benchmarks/lora_concepts.py --out runs/concepts [--steps 2400] [--rank 4]
        [--lora-lr 1e-2] [--full-lr 1e-3] [--seeds 4 --seed-offset 1000000]
        [--jsonl docs/lora/concepts.jsonl] [key=value ...]

Each method fine-tunes shapes-tiny with ``univid finetune`` for the same steps, each at its own
learning rate (adapters start at zero and need a larger one), on the shapes world with
``data.novel_fraction`` of its clips showing a new concept (the rest are the old world, so the
old prompts are rehearsed), in a process of its own: wall time and peak memory (the process's
max RSS) are measured around it, and the size of what it writes (the adapter also as exported
in fp16, the dtype the bundled base ships in). Then the base and each fine-tuned model are
judged with ``univid eval`` on the new prompts (44) and the old ones (84), on the seeds given
(publish on held-out seeds: the default 1,000,000+ was not looked at while choosing the recipe).
One JSON line per fine-tuning run and per (model, prompt set) goes to stdout and ``--jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from univid.device import cpu_flags

# The peak is this process's VmHWM: getrusage's ru_maxrss would carry the parent's size over.
CHILD = """
import sys
from univid.cli import main
code = main(sys.argv[1:])
peak = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")).split()[1]
print("MAXRSS_KB", peak, file=sys.stderr)
sys.exit(code)
"""


def univid(*args: str) -> tuple[float, float, str]:
    """Run ``univid ARGS`` in a fresh process: (wall seconds, peak RSS in MiB, stdout)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"univid {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    rss = next(int(ln.split()[1]) for ln in done.stderr.splitlines() if ln.startswith("MAXRSS_KB"))
    return wall, rss / 1024, done.stdout


def size_mib(folder: Path, names: tuple[str, ...]) -> float:
    return sum((folder / n).stat().st_size for n in names if (folder / n).is_file()) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the fine-tuning runs and reports")
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--lora-lr", type=float, default=1e-2)
    p.add_argument("--full-lr", type=float, default=1e-3)
    p.add_argument("--methods", default="lora,full")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--seed-offset", type=int, default=1_000_000)
    p.add_argument("--jsonl", help="append the JSON lines here too")
    p.add_argument("overrides", nargs="*", help="extra key=value for both fine-tunings")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [
        f"train.steps={args.steps}",
        "train.sample_every=0",
        f"train.ckpt_every={args.steps}",
        f"train.val_every={args.steps}",
        *args.overrides,
    ]
    machine = {"cpu_flags": cpu_flags(), "cpus": platform.processor() or platform.machine()}
    lines = []
    models = {"base": ("shapes-tiny", [])}
    for method in args.methods.split(","):
        run = out / method
        rank = args.rank if method == "lora" else 0
        lr = args.lora_lr if rank else args.full_lr
        wall, rss, _ = univid("finetune", "shapes-tiny", "--out", str(run), *common,
                              f"lora.rank={rank}", f"train.lr={lr}")  # fmt: skip
        files = ("adapter.safetensors",) if rank else ("model.safetensors",)
        lines.append(
            {
                "kind": "finetune",
                "method": method,
                "rank": rank,
                "lr": lr,
                "steps": args.steps,
                "overrides": common,
                "wall_s": round(wall, 1),
                "peak_rss_mib": round(rss),
                "weights_mib": round(size_mib(run, files), 3),
                "weights_fp16_mib": round(_fp16_size(run, files), 3),
                "base_mib": round(size_mib(Path(_bundled()), ("model.safetensors",)), 3),
                **machine,
            }
        )
        print(json.dumps(lines[-1]), flush=True)
        models[method] = ("shapes-tiny", ["--lora", str(run)]) if rank else (str(run), [])
    for name, (model, extra) in models.items():
        for prompts in ("novel", "world"):
            report = out / f"{name}-{prompts}.json"
            wall, _, stdout = univid("eval", "--model", model, *extra, "--prompts", prompts,
                                     "--seeds", str(args.seeds), "--seed-offset",
                                     str(args.seed_offset), "--out", str(report))  # fmt: skip
            summary = json.loads(stdout.strip().splitlines()[-1])
            summary.pop("grid", None), summary.pop("failures_grid", None)
            summary["report"] = report.name  # beside the runs in --out
            lines.append({**summary, "kind": "eval", "model": name, "prompts": prompts})
            print(json.dumps(lines[-1]), flush=True)
    if args.jsonl:
        with open(args.jsonl, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)


def _fp16_size(run: Path, files: tuple[str, ...]) -> float:
    """Size of what ``univid export RUN --dtype float16`` writes (a merged-free adapter folder,
    or a model folder)."""
    half = run.with_name(run.name + "-fp16")
    univid("export", str(run), "--dtype", "float16", "--out", str(half))
    return size_mib(half, files)


def _bundled() -> str:
    from univid.build import resolve_model_dir

    return str(resolve_model_dir("shapes-tiny"))


if __name__ == "__main__":
    main()
