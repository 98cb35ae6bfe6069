"""Evaluate a text-to-video generator on every shapes-world prompt with the analytic judge.

``run_eval`` asks the generator for ``num_seeds`` videos of each canonical prompt of a prompt
set (:data:`univid.data.shapes.PROMPT_SETS`: the world's 84, or the 44 with a novel concept),
judges them and summarises: the all-correct rate with its Wilson 95 % interval, the failures by
kind, per-attribute accuracies and the seeds used. ``write_grid`` draws videos with their
verdicts into one labelled PNG for a quick look; ``save_report`` writes the JSON, the grid of
all videos and the grid of the failures only. With a ``mode`` other than t2v each video is given
frames of a held-out world clip of its prompt and judged by :mod:`univid.eval.modes`.

Seeds are ``seed_offset .. seed_offset + num_seeds - 1``. The default offset is far from the
small seeds that training, development, tests and the README use, so a published figure is
measured on noise that nobody has looked at or tuned on.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from univid.config.sections import EVAL_MODES
from univid.data.shapes import (
    ShapeClip,
    all_prompts,
    canonical_prompt,
    render,
)
from univid.eval.judge import FAILURES, failure_against, judge
from univid.eval.modes import MODE_FAILURES, conditioning_clip, given_indices, judge_mode

ATTRIBUTES = ("colour", "shape", "direction")
EVAL_SEED_OFFSET = 1_000_000
WILSON_Z = 1.959963984540054  # the 97.5 % quantile of the standard normal: a 95 % interval
Generate = Callable[..., np.ndarray]  # (prompts, seeds[, given=]) -> uint8 (N, T, H, W, 3)


def _plan(num_seeds: int, seed_offset: int, prompt_set: str) -> list[dict]:
    """One item per (prompt, seed), prompt-major so one prompt's seeds sit together."""
    return [
        {
            "prompt": canonical_prompt(c, s, d),
            "colour": c,
            "shape": s,
            "direction": d,
            "seed": seed,
        }
        for c, s, d in all_prompts(prompt_set)
        for seed in range(seed_offset, seed_offset + num_seeds)
    ]


def _generate_all(
    generate: Generate, items: list[dict], batch_size: int, progress: bool, given: list | None
):
    """Call ``generate`` chunk by chunk and check what it returns; (N, T, H, W, 3) uint8.

    With ``given`` (one dict of given frames per item) it is passed on as ``given=``."""
    chunks = []
    with tqdm(total=len(items), desc="eval", unit="video", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            extra = {"given": given[start : start + batch_size]} if given else {}
            prompts, seeds = [i["prompt"] for i in chunk], [i["seed"] for i in chunk]
            videos = np.asarray(generate(prompts, seeds, **extra))
            if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[0] != len(chunk):
                raise ValueError(
                    f"generate must return uint8 (N={len(chunk)}, T, H, W, 3) videos, "
                    f"got {videos.dtype} {videos.shape}"
                )
            chunks.append(videos)
            bar.update(len(chunk))
    return np.concatenate(chunks)


def _jsonable(value: object) -> object:
    """Plain Python values for JSON: numpy scalars unwrapped, nan as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _accuracy(items: list[dict], key: str) -> float:
    return float(np.mean([i["correct"][key] for i in items])) if items else 0.0


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a binomial rate: (centre -+ half) / (1 + z^2 / n), where

    centre = p + z^2 / (2 n),  half = z sqrt(p (1 - p) / n + z^2 / (4 n^2)),  p = k / n.

    Unlike p -+ z sqrt(p (1 - p) / n) it stays inside [0, 1] and is not empty at p = 0 or 1,
    which matters when nearly every video is right.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    p, n = successes / trials, trials
    denominator = 1 + z * z / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = (centre - half) / denominator, (centre + half) / denominator
    # At k = 0 (k = n) the lower (upper) end is exactly 0 (1); say so rather than round near it.
    return (0.0 if successes == 0 else low), (1.0 if successes == trials else high)


def _judge_item(item: dict, video: np.ndarray) -> None:
    """Add the verdict, the failure kind (None when right) and per-attribute hits to ``item``."""
    verdict = judge(video)
    judged = dataclasses.asdict(verdict)
    correct = {a: judged[a] == item[a] for a in ATTRIBUTES}
    correct["all_three"] = all(correct.values())
    item["failure"] = failure_against(verdict, item["colour"], item["shape"], item["direction"])
    correct["all_correct"] = item["failure"] is None
    item["judged"] = {k: _jsonable(v) for k, v in judged.items()}
    item["correct"] = correct


def _condition(items: list[dict], mode: str, size: tuple[int, int, int]) -> list[tuple]:
    """The held-out world clip and given frames of each item (see :mod:`univid.eval.modes`);
    what they were is added to the items as ``conditioning``."""
    frames, height, width = size
    indices = given_indices(mode, frames)
    conditions = []
    for item in items:
        attributes = (item["colour"], item["shape"], item["direction"])
        clip = conditioning_clip(*attributes, item["seed"], height, width)
        truth = render(clip, frames, height, width)
        conditions.append((clip, {t: truth[t] for t in indices}))
        item["conditioning"] = {
            "given": indices,
            "start": list(clip.start),
            "radius": clip.radius,
            "distance": clip.distance,
        }
    return conditions


def _judge_given_item(item: dict, video: np.ndarray, mode: str, clip: ShapeClip, given: dict):
    """:func:`_judge_item` for a video made from given frames: the failure is the first of
    MODE_FAILURES (:func:`univid.eval.modes.judge_mode`), its measurements go to ``checks``."""
    _judge_item(item, video)
    item["failure"], checks = judge_mode(mode, video, clip, given)
    item["correct"]["all_correct"] = item["failure"] is None
    item["checks"] = {k: _jsonable(v) for k, v in checks.items()}


def run_eval(
    generate: Generate,
    num_seeds: int,
    batch_size: int = 32,
    progress: bool = True,
    seed_offset: int = EVAL_SEED_OFFSET,
    mode: str = "t2v",
    size: tuple[int, int, int] | None = None,
    prompt_set: str = "world",
) -> tuple[dict, np.ndarray]:
    """Generate and judge ``num_seeds`` videos of every prompt of ``prompt_set``
    (:data:`univid.data.shapes.PROMPT_SETS`), seeds from ``seed_offset`` on.

    ``generate(prompts, seeds)`` returns uint8 videos (N, T, H, W, 3), prompt i with seed i.
    Returns the JSON-serialisable report and the videos (N, T, H, W, 3) in item order.
    ``all_correct`` is the headline: one object of the world's size, steady shape and colour,
    all three attributes as prompted; ``all_three`` checks only the attributes.

    ``mode`` other than 't2v' (i2v, extend, interpolate) gives each video frames of a held-out
    world clip of its prompt at ``size`` (frames, height, width: the generator's), passed as
    ``generate(prompts, seeds, given=[{index: uint8 (H, W, 3)}, ...])``, and judges it with
    :func:`univid.eval.modes.judge_mode`; failures are then counted by MODE_FAILURES.
    """
    if num_seeds < 1 or batch_size < 1 or seed_offset < 0:
        raise ValueError(
            f"num_seeds and batch_size must be >= 1 and seed_offset >= 0, "
            f"got {num_seeds}, {batch_size}, {seed_offset}"
        )
    if mode not in EVAL_MODES or (mode != "t2v" and size is None):
        raise ValueError(f"mode must be one of {EVAL_MODES} (all but t2v with a size), got {mode}")
    items = _plan(num_seeds, seed_offset, prompt_set)
    conditions = _condition(items, mode, size) if mode != "t2v" else []
    given = [frames for _, frames in conditions]
    videos = _generate_all(generate, items, batch_size, progress, given)
    for k, (item, video) in enumerate(zip(items, videos, strict=True)):
        if conditions:
            _judge_given_item(item, video, mode, *conditions[k])
        else:
            _judge_item(item, video)
    right = sum(item["failure"] is None for item in items)
    low, high = wilson_interval(right, len(items))
    kinds = MODE_FAILURES if conditions else FAILURES
    report = {
        "mode": mode,
        "prompts": prompt_set,
        "num_prompts": len(items) // num_seeds,
        "num_videos": len(items),
        "all_correct": right,
        "all_correct_wilson95": [low, high],
        "seeds": {"offset": seed_offset, "per_prompt": num_seeds},
        "accuracy": {k: _accuracy(items, k) for k in (*ATTRIBUTES, "all_three", "all_correct")},
        "failures": {k: sum(item["failure"] == k for item in items) for k in kinds},
    }
    for attribute in ATTRIBUTES:
        values = dict.fromkeys(item[attribute] for item in items)  # the set's, in prompt order
        report[f"per_{attribute}"] = {
            v: _accuracy([i for i in items if i[attribute] == v], "all_correct") for v in values
        }
    report["items"] = items
    return report, videos


def _frames_strip(video: np.ndarray, scale: int, gap: int) -> Image.Image:
    """First, two middle and last frames side by side, upscaled by ``scale`` (nearest)."""
    frames, height, width, _ = video.shape
    picks = np.linspace(0, frames - 1, 4).round().astype(int)
    w, h = width * scale, height * scale
    strip = Image.new("RGB", (4 * w + 3 * gap, h), (64, 64, 64))
    for k, t in enumerate(picks):
        frame = Image.fromarray(video[t]).resize((w, h), Image.Resampling.NEAREST)
        strip.paste(frame, (k * (w + gap), 0))
    return strip


def _label(item: dict) -> tuple[str, str, tuple[int, int, int]]:
    """Two label lines (prompt and seed; verdict) and the verdict's colour."""
    kind = item["failure"]
    wrong = [f"{a}={item['judged'][a]}" for a in ATTRIBUTES if not item["correct"][a]]
    verdict = f"wrong: {kind}" + "".join(f", {w}" for w in wrong) if kind else "all correct"
    return (
        f"{item['prompt']}  seed {item['seed']}",
        verdict,
        (255, 90, 90) if kind else (90, 230, 90),
    )


def write_grid(report: dict, videos: np.ndarray, path: str | Path, columns: int = 4) -> None:
    """Write a PNG with one labelled cell (4 frames + prompt, seed, verdict) per report item."""
    items = report["items"]
    if len(items) != len(videos) or not len(items):
        raise ValueError(f"need one video per item, got {len(videos)} for {len(items)} items")
    _, _, height, width, _ = videos.shape
    # Upscale so frames come out about 64 px, whatever the generation size.
    scale = max(1, round(64 / max(height, width)))
    gap, pad, line = 2, 6, 13
    font = ImageFont.load_default()
    labels = [_label(item) for item in items]
    text_w = max(font.getlength(text) for first, second, _ in labels for text in (first, second))
    cell_w = max(4 * width * scale + 3 * gap, math.ceil(text_w))
    cell_h = height * scale + 2 * line + 4
    columns = max(1, min(columns, len(items)))
    rows = math.ceil(len(items) / columns)
    grid = Image.new("RGB", (columns * (cell_w + pad) + pad, rows * (cell_h + pad) + pad))
    draw = ImageDraw.Draw(grid)
    for n, ((first, second, colour), video) in enumerate(zip(labels, videos, strict=True)):
        x = pad + (n % columns) * (cell_w + pad)
        y = pad + (n // columns) * (cell_h + pad)
        draw.text((x, y), first, fill=(230, 230, 230), font=font)
        draw.text((x, y + line), second, fill=colour, font=font)
        grid.paste(_frames_strip(video, scale, gap), (x, y + 2 * line + 4))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG")


def save_report(
    report: dict, videos: np.ndarray, path: str | Path, grid: str | Path
) -> Path | None:
    """Write the JSON report, the grid of every video and, beside the report, the grid of the
    failures only (``<report>-failures.png``; returned, or None when nothing failed)."""
    path = Path(path)
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_grid(report, videos, grid)
    failed = [k for k, item in enumerate(report["items"]) if item["failure"]]
    failures = path.with_name(f"{path.stem}-failures.png")
    if not failed:
        failures.unlink(missing_ok=True)  # a stale grid from an earlier run would mislead
        return None
    write_grid({"items": [report["items"][k] for k in failed]}, videos[failed], failures)
    return failures
