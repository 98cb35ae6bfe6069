"""Evaluate a text-to-video generator on every shapes-world prompt with the analytic judge.

``run_eval`` asks the generator for ``num_seeds`` videos of each of the 84 canonical prompts,
judges them and summarises the accuracies; ``write_grid`` draws the videos with their verdicts
into one labelled PNG for a quick look.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from univid.data.shapes import COLOURS, DIRECTIONS, SHAPES, all_prompts, canonical_prompt
from univid.eval.judge import judge

ATTRIBUTES = ("colour", "shape", "direction")
Generate = Callable[[list[str], list[int]], np.ndarray]


def _plan(num_seeds: int) -> list[dict]:
    """One item per (prompt, seed), prompt-major so one prompt's seeds sit together."""
    return [
        {
            "prompt": canonical_prompt(c, s, d),
            "colour": c,
            "shape": s,
            "direction": d,
            "seed": seed,
        }
        for c, s, d in all_prompts()
        for seed in range(num_seeds)
    ]


def _generate_all(generate: Generate, items: list[dict], batch_size: int, progress: bool):
    """Call ``generate`` chunk by chunk and check what it returns; (N, T, H, W, 3) uint8."""
    chunks = []
    with tqdm(total=len(items), desc="eval", unit="video", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            videos = np.asarray(generate([i["prompt"] for i in chunk], [i["seed"] for i in chunk]))
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


def run_eval(
    generate: Generate, num_seeds: int, batch_size: int = 32, progress: bool = True
) -> tuple[dict, np.ndarray]:
    """Generate and judge ``num_seeds`` videos of every prompt.

    ``generate(prompts, seeds)`` returns uint8 videos (N, T, H, W, 3), prompt i with seed i.
    Returns the JSON-serialisable report and the videos (N, T, H, W, 3) in item order.
    """
    if num_seeds < 1 or batch_size < 1:
        raise ValueError(f"num_seeds and batch_size must be >= 1, got {num_seeds}, {batch_size}")
    items = _plan(num_seeds)
    videos = _generate_all(generate, items, batch_size, progress)
    for item, video in zip(items, videos, strict=True):
        verdict = dataclasses.asdict(judge(video))
        correct = {a: verdict[a] == item[a] for a in ATTRIBUTES}
        correct["all_three"] = all(correct.values())
        item["judged"] = {k: _jsonable(v) for k, v in verdict.items()}
        item["correct"] = correct
    report = {
        "num_videos": len(items),
        "accuracy": {k: _accuracy(items, k) for k in (*ATTRIBUTES, "all_three")},
    }
    for attribute, values in (("colour", COLOURS), ("shape", SHAPES), ("direction", DIRECTIONS)):
        report[f"per_{attribute}"] = {
            v: _accuracy([i for i in items if i[attribute] == v], "all_three") for v in values
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
    wrong = [f"{a}={item['judged'][a]}" for a in ATTRIBUTES if not item["correct"][a]]
    verdict = "wrong: " + ", ".join(wrong) if wrong else "all correct"
    return (
        f"{item['prompt']}  seed {item['seed']}",
        verdict,
        (255, 90, 90) if wrong else (90, 230, 90),
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
