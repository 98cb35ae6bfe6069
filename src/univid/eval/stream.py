"""`univid eval --mode long`: stream a long video for every prompt and judge it whole.

Every (prompt, seed) of the prompt set is streamed for ``frames`` frames (a batch at a time,
:meth:`univid.pipeline.Pipeline.stream_batch`) and judged by :func:`univid.eval.long.judge_long`:
the prompt's one object kept in 95 % of frames, the prompted start direction, no seam, the
world's speed, and bounces only at walls. The report pools the verdicts
(:func:`univid.eval.long.summarize_long`); the drift plot shows size, colour and speed against
frame index. Videos are not kept beyond their batch unless asked for (``keep``), so memory stays
that of one batch.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from univid.config.sections import LONG_FRAMES
from univid.data.shapes import BounceWorld
from univid.device import autocast_dtype, precision_name
from univid.errors import InputError
from univid.eval.long import MIN_FRAMES, judge_long, judge_next_chunk, summarize_long
from univid.eval.report import EVAL_SEED_OFFSET, _plan, wilson_interval


def evaluate_long(
    pipe: Any,
    *,
    model: str,
    seeds: int,
    seed_offset: int = EVAL_SEED_OFFSET,
    frames: int = LONG_FRAMES,
    steps: int | None = None,
    guidance: float | None = None,
    solver: str | None = None,
    shift: float | None = None,
    context_time: float | None = None,
    context_guidance: float | None = None,
    history_guidance: float | None = None,
    batch_size: int = 42,
    progress: bool = True,
    prompt_set: str = "world",
    keep: int = 8,
) -> tuple[dict, np.ndarray]:
    """Judge ``seeds`` streamed videos of ``frames`` frames per prompt of ``prompt_set``.

    Returns the report (the summary of :func:`summarize_long`, one row per video with its
    failure and figures, and the settings) and the first ``keep`` videos that failed
    (N, T, H, W, 3), to look at."""
    if frames < MIN_FRAMES:
        raise InputError(f"--mode long judges videos of {MIN_FRAMES} frames or more, not {frames}")
    items = _plan(seeds, seed_offset, prompt_set)
    chunk = pipe.config.model.chunk * pipe.config.model.patch[0]
    verdicts, kept = [], []
    bar = tqdm(total=len(items) * frames, desc="long eval", unit="frame", disable=not progress)
    start = time.perf_counter()
    for first in range(0, len(items), batch_size):
        batch = items[first : first + batch_size]
        parts = []
        for part in pipe.stream_batch(
            {0: [i["prompt"] for i in batch]},
            [i["seed"] for i in batch],
            frames,
            steps,
            guidance,
            solver,
            shift,
            context_time,
            context_guidance=context_guidance,
            history_guidance=history_guidance,
        ):
            parts.append(part)
            bar.update(part.shape[0] * part.shape[1])
        videos = np.concatenate(parts, axis=1)
        for item, video in zip(batch, videos):
            verdicts.append(
                judge_long(video, item["colour"], item["shape"], item["direction"], chunk)
            )
        kept.extend(videos[: max(0, keep - len(kept))])
    bar.close()
    seconds = time.perf_counter() - start
    flow, stream = pipe.config.flow, pipe.config.stream
    report = {
        "mode": "long",
        **summarize_long(verdicts, chunk),
        "items": [
            {
                **item,
                "failure": v.failure,
                "reasons": list(v.reasons),
                "identity": v.identity,
                "speed": v.speed,
                "max_step": v.max_step,
                "reversals": v.reversals,
                "mid_reversals": v.mid_reversals,
                "start_direction": v.start_direction,
                "reference_radius": v.reference_radius,
            }
            for item, v in zip(items, verdicts)
        ],
        "settings": {
            "model": model,
            "mode": "long",
            "prompts": prompt_set,
            "seeds": seeds,
            "seed_offset": seed_offset,
            "frames": frames,
            "steps": steps or flow.sample_steps,
            "guidance": flow.guidance if guidance is None else guidance,
            "solver": solver or flow.solver,
            "shift": flow.shift if shift is None else shift,
            "context_time": stream.context_time if context_time is None else context_time,
            "context_guidance": stream.guidance if context_guidance is None else context_guidance,
            "history_guidance": (
                stream.history_guidance if history_guidance is None else history_guidance
            ),
            "window": stream.window,
            "chunk": chunk,
            "precision": precision_name(autocast_dtype(pipe.precision, pipe.device)),
            "sampling_seconds": round(seconds, 2),
        },
    }
    shape = (0, frames, pipe.config.data.height, pipe.config.data.width, 3)
    return report, np.stack(kept) if kept else np.zeros(shape, np.uint8)


def evaluate_next_chunk(
    pipe: Any,
    *,
    windows: int,
    seed: int = EVAL_SEED_OFFSET,
    steps: int | None = None,
    context_guidance: float | None = None,
    history_guidance: float | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> dict:
    """One chunk after ground-truth context, ``windows`` times: what the model does with a
    context as right as it can be, without the compounding of a long generation.

    The windows are the bouncing world's training windows (:class:`BounceWorld` of ``seed``,
    all past their clip's opening: the anchor, then the whole window); each chunk is sampled
    by :meth:`univid.pipeline.Pipeline.next_chunk` and judged by
    :func:`univid.eval.long.judge_next_chunk`. The report counts chunks with a stall, a step
    the wrong way and a centre further than the clip's speed from the truth's (each with its
    Wilson interval), and the error's median and 90th percentile."""
    cfg = pipe.config
    per_chunk = cfg.model.chunk * cfg.model.patch[0]
    d, st = cfg.data, cfg.stream
    if not cfg.model.chunk:
        raise InputError("one-chunk evaluation needs a streaming model (model.chunk > 0)")
    context = (st.anchor + st.window) * cfg.model.patch[0]
    world = BounceWorld(context + per_chunk, d.height, d.width, seed, 0.0, st.anchor)
    verdicts, speeds = [], []
    start = time.perf_counter()
    for first in tqdm(range(0, windows, batch_size), desc="next chunk", disable=not progress):
        items = [world[i] for i in range(first, min(windows, first + batch_size))]
        truth = np.stack([video for video, *_ in items])
        chunk = pipe.next_chunk(
            truth[:, :context],
            [text for _, text, *_ in items],
            [seed + first + i for i in range(len(items))],
            steps,
            context_guidance,
            history_guidance=history_guidance,
        )
        made = np.concatenate([truth[:, :context], chunk], axis=1)
        for (_, _, clip, _), m, t in zip(items, made, truth):
            verdicts.append(
                judge_next_chunk(m, t, clip.colour, clip.shape, clip.direction, context)
            )
            speeds.append(clip.speed)
    errors = np.array([v.error for v in verdicts])
    counts = {
        "stall": sum(v.stall for v in verdicts),
        "wrong_way": sum(v.wrong_way for v in verdicts),
        "off_by_speed": int((errors > np.array(speeds)).sum()),
    }
    counts["any"] = sum(
        bool(v.stall or v.wrong_way or e > sp) for v, e, sp in zip(verdicts, errors, speeds)
    )
    return {
        "mode": "next_chunk",
        "windows": len(verdicts),
        **counts,
        **{f"{k}_wilson95": wilson_interval(n, len(verdicts)) for k, n in counts.items()},
        "error_median": float(np.median(errors)),
        "error_p90": float(np.quantile(errors, 0.9)),
        "settings": {
            "seed": seed,
            "context_frames": context,
            "chunk": per_chunk,
            "steps": steps or cfg.flow.sample_steps,
            "context_guidance": st.guidance if context_guidance is None else context_guidance,
            "history_guidance": (
                st.history_guidance if history_guidance is None else history_guidance
            ),
            "precision": precision_name(autocast_dtype(pipe.precision, pipe.device)),
            "sampling_seconds": round(time.perf_counter() - start, 2),
        },
    }
