"""`univid eval` as a function: generate with a pipeline, judge, and add what the run was.

The command line only parses, calls :func:`evaluate` and prints; the benchmarks reuse it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from univid.device import autocast_dtype, precision_name
from univid.eval.report import EVAL_SEED_OFFSET, run_eval
from univid.eval.validation import ValidationSet
from univid.flow import nfe


def evaluate(
    pipe: Any,
    *,
    model: str,
    seeds: int,
    seed_offset: int = EVAL_SEED_OFFSET,
    steps: int | None = None,
    guidance: float | None = None,
    solver: str | None = None,
    shift: float | None = None,
    step_cache: float | None = None,
    batch_size: int = 42,
    progress: bool = True,
    mode: str = "t2v",
    prompt_set: str = "world",
) -> tuple[dict, np.ndarray]:
    """Judge ``seeds`` videos of every prompt of ``prompt_set`` (one of
    univid.data.shapes.PROMPT_SETS) from ``pipe`` (a :class:`univid.pipeline.Pipeline`).

    ``None`` settings mean the model's own. Returns the report of :func:`run_eval` plus the
    model's fixed validation loss (None for a few-step student) and the settings (with the
    network forwards actually run per batch, which the step cache lowers below the NFE) and
    the videos (N, T, H, W, 3) uint8.
    """
    flow = pipe.config.flow
    steps_used, solver_used = steps or flow.sample_steps, solver or flow.solver
    sampling = {"shift": shift, "solver": solver, "step_cache": step_cache}
    forwards: list[float] = []

    def generate(prompts: list[str], seed_list: list[int], **given: list) -> np.ndarray:
        videos = pipe.generate(
            prompts, seed_list, num_steps=steps, guidance_scale=guidance, **sampling, **given
        )
        cache = pipe.last_cache
        forwards.append(cache.computed if cache else nfe(solver_used, steps_used))
        return videos

    start = time.perf_counter()
    data = pipe.config.data
    report, videos = run_eval(
        generate,
        seeds,
        batch_size=batch_size,
        progress=progress,
        seed_offset=seed_offset,
        mode=mode,
        size=(data.frames, data.height, data.width),
        prompt_set=prompt_set,
    )
    seconds = time.perf_counter() - start
    # A few-step student learns its steps, not the flow's velocity: that loss says nothing of it.
    student = bool(pipe.config.distill.method)
    report["validation"] = (
        {"val_loss": None}
        if student
        else ValidationSet(pipe.config, pipe.text_encoder).loss(pipe.model)
    )
    adapter = getattr(pipe, "lora", None) or {}  # a LoRA adapter on the model, if any
    report["settings"] = {
        "model": model,
        "lora": adapter.get("path"),
        "lora_scale": adapter.get("scale"),
        "mode": mode,
        "prompts": prompt_set,
        "seeds": seeds,
        "seed_offset": seed_offset,
        "steps": steps_used,
        "guidance": flow.guidance if guidance is None else guidance,
        "solver": solver_used,
        "shift": flow.shift if shift is None else shift,
        "step_cache": flow.step_cache if step_cache is None else step_cache,
        "nfe": nfe(solver_used, steps_used),
        "precision": precision_name(autocast_dtype(pipe.precision, pipe.device)),
        "forwards_per_batch": sum(forwards) / len(forwards),
        "sampling_seconds": round(seconds, 2),
    }
    return report, videos
