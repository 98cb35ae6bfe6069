"""Streaming generation: speed, the KV cache against recomputing the context, memory against
length, and long-video quality. Every mode prints JSON lines (with the CPU flags and threads).

``--speed``: frames per second streaming ``--frames`` frames at batch 1 and 16 (per video), and
the real-time factor against the model's playback fps, without history guidance and with the
model's (or each ``--history-guidance``); then, at batch 1, the KV cache against
recomputing the context at every step, the two in turn ``--repeats`` times (ratios pair by pair:
timings on shared machines drift), with how far the two videos differ (uint8 levels) in fp32
and in the precision measured.

``--memory``: peak resident memory of a fresh process streaming each of ``--lengths`` frames
(batch 1), and the seconds of each chunk along the longest; ``--plot PNG`` draws both.

``--next-chunk N``: N chunks made after ground-truth context (bouncing-world windows of
``--seed-offset``), judged against the world's own continuation
(:func:`univid.eval.stream.evaluate_next_chunk`): stalls, steps the wrong way and centres off by
more than the speed, without the compounding of a long generation.

``--quality``: ``univid eval --mode long`` (``--seeds`` per prompt from ``--seed-offset``) for
each ``--context-times``, ``--guidance`` (the first chunk's) and ``--context-guidance`` (the
later chunks', ``stream.guidance``) value.

    python benchmarks/stream.py --speed --model shapes-long > docs/stream_speed.jsonl
    python benchmarks/stream.py --memory --model shapes-long --plot docs/assets/stream_memory.png \\
        > docs/stream_memory.jsonl
    python benchmarks/stream.py --next-chunk 512 --model shapes-long --seed-offset 6000000
    python benchmarks/stream.py --quality --model shapes-long --seeds 2 --seed-offset 4000000 \\
        > docs/stream_quality.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

PROMPT = "a red ball moves right"


def machine() -> dict:
    import torch

    from univid.device import cpu_flags

    return {"threads": torch.get_num_threads(), "cpu_flags": cpu_flags()}


def stream_seconds(pipe, frames: int, batch: int, **kwargs) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    parts = list(pipe.stream_batch({0: [PROMPT] * batch}, list(range(batch)), frames, **kwargs))
    return time.perf_counter() - start, np.concatenate(parts, axis=1)


def speed(args: argparse.Namespace) -> None:
    from univid.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, device="cpu")
    fps = pipe.config.data.fps
    stream_seconds(pipe, 16, 1)  # warm-up
    # Off (the KV cache's own figure) and the model's own setting, which adds a forward a step.
    histories = args.history_guidance or sorted({1.0, pipe.config.stream.history_guidance})
    for history in histories:
        for batch in (1, 16):
            seconds = statistics.median(
                stream_seconds(pipe, args.frames, batch, history_guidance=history)[0]
                for _ in range(args.repeats)
            )
            per_second = args.frames * batch / seconds
            row = {"what": "stream", "batch": batch, "frames": args.frames, "seconds": seconds}
            rates = {"fps": per_second, "realtime": per_second / fps}
            print(json.dumps({**row, **rates, "history_guidance": history, **machine()}))
    default = pipe.precision
    for history, precision in itertools.product(histories, ("fp32", default)):
        pipe.precision = precision
        ratios, cached, recomputed = [], None, None
        for _ in range(args.repeats):
            with_cache, cached = stream_seconds(pipe, args.frames, 1, history_guidance=history)
            without, recomputed = stream_seconds(
                pipe, args.frames, 1, kv_cache=False, history_guidance=history
            )
            ratios.append(without / with_cache)
        diff = np.abs(cached.astype(int) - recomputed.astype(int))
        print(
            json.dumps(
                {
                    "what": "kv_cache_vs_recompute",
                    "precision": precision,
                    "history_guidance": history,
                    "frames": args.frames,
                    "speedup_median": statistics.median(ratios),
                    "speedups": ratios,
                    "max_level_diff": int(diff.max()),
                    "share_of_values_differing": float((diff > 0).mean()),
                    "first_frame_differing": int(
                        np.argmax(diff.reshape(diff.shape[1], -1).max(1) > 0)
                    )
                    if diff.any()
                    else None,
                    **machine(),
                }
            )
        )


def one_length(model: str, frames: int) -> dict:
    """Stream ``frames`` frames in this (fresh) process: peak RSS and seconds per chunk."""
    from univid.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(model, device="cpu")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, start = [], time.perf_counter()
    for _ in pipe.stream_batch({0: [PROMPT]}, [0], frames):
        now = time.perf_counter()
        times.append(now - start)
        start = now
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "frames": frames,
        "peak_rss_mb": peak / 1024,
        "rss_after_load_mb": before / 1024,
        "chunk_seconds": times,
    }


def memory(args: argparse.Namespace) -> None:
    rows = []
    for frames in args.lengths:
        run = subprocess.run(
            [sys.executable, __file__, "--one-length", str(frames), "--model", args.model],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(run.stdout.strip().splitlines()[-1])
        rows.append(row)
        short = {k: v for k, v in row.items() if k != "chunk_seconds"}
        chunks = row["chunk_seconds"][1:]  # the first chunk has no context
        print(
            json.dumps(
                {
                    "what": "memory",
                    **short,
                    "median_chunk_seconds": statistics.median(chunks),
                    **machine(),
                }
            )
        )
    if args.plot:
        plot(rows, args.plot)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    lengths = [r["frames"] for r in rows]
    left.plot(lengths, [r["peak_rss_mb"] for r in rows], "o-", label="peak (process)")
    left.plot(lengths, [r["rss_after_load_mb"] for r in rows], "s--", label="after loading")
    left.set(xscale="log", xlabel="frames streamed", ylabel="resident memory (MB)", ylim=(0, None))
    left.set_xticks(lengths, [str(n) for n in lengths])
    left.legend(loc="lower right")
    longest = rows[-1]
    chunks = longest["chunk_seconds"]
    step = len(longest["chunk_seconds"]) and longest["frames"] / len(chunks)
    right.plot([i * step for i in range(len(chunks))], chunks, lw=0.8)
    right.set(xlabel="frame index", ylabel="seconds per chunk", ylim=(0, max(chunks) * 1.2))
    right.set_title(f"{longest['frames']} frames, batch 1", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def quality(args: argparse.Namespace) -> None:
    from univid.eval.stream import evaluate_long
    from univid.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, device="cpu")
    for context_time, first, later, history in itertools.product(
        args.context_times,
        args.guidance or [None],
        args.context_guidance or [None],
        args.history_guidance or [None],
    ):
        report, _ = evaluate_long(
            pipe,
            model=args.model,
            seeds=args.seeds,
            seed_offset=args.seed_offset,
            frames=args.frames,
            guidance=first,
            context_guidance=later,
            history_guidance=history,
            context_time=context_time,
            steps=args.steps,
            batch_size=args.batch_size,
            progress=False,
        )
        keys = ("videos", "right", "right_wilson95", "failures", "reasons", "identity", "seam")
        row = {"what": "long_quality", **{k: report[k] for k in keys}}
        print(json.dumps({**row, **report["settings"], **machine()}), flush=True)


def next_chunk(args: argparse.Namespace) -> None:
    from univid.eval.stream import evaluate_next_chunk
    from univid.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, device="cpu")
    for later, history in itertools.product(
        args.context_guidance or [None], args.history_guidance or [None]
    ):
        report = evaluate_next_chunk(
            pipe,
            windows=args.next_chunk,
            seed=args.seed_offset,
            steps=args.steps,
            context_guidance=later,
            history_guidance=history,
            progress=False,
        )
        settings = report.pop("settings")
        row = {"what": "next_chunk", "model": args.model, **report, **settings, **machine()}
        print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="shapes-long")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--memory", action="store_true")
    p.add_argument("--quality", action="store_true")
    p.add_argument("--next-chunk", type=int, metavar="N", help="chunks after true context")
    p.add_argument("--one-length", type=int, help=argparse.SUPPRESS)
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--plot")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--seed-offset", type=int, default=2_000_000)
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int, default=42)
    p.add_argument("--context-times", type=float, nargs="+", default=[None])
    p.add_argument("--guidance", type=float, nargs="+", help="the first chunk's guidance")
    p.add_argument("--context-guidance", type=float, nargs="+", help="the later chunks'")
    p.add_argument("--history-guidance", type=float, nargs="+", help="stream.history_guidance")
    args = p.parse_args()
    if args.one_length:
        print(json.dumps(one_length(args.model, args.one_length)))
    if args.speed:
        speed(args)
    if args.memory:
        memory(args)
    if args.quality:
        quality(args)
    if args.next_chunk:
        next_chunk(args)


if __name__ == "__main__":
    main()
