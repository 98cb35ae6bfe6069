"""From three real videos to a small univid model on TAEF2 latents, and an honest check of it.

    python examples/real_footage/recipe.py cut ../shared/realdata real/       # shots + captions
    univid prepare real/ --out real-cache/ --autoencoder taef2 --buckets 8x128x128 \\
        --stride 2 --window-stride 2
    univid train examples/real_footage/real-tiny.yaml --out runs/real data.cache=real-cache/
    python examples/real_footage/recipe.py match runs/real real-cache/ --out docs/real/

``cut`` writes one short video per row of ``captions.csv`` (a shot, or part of one, described
by hand) with its caption beside it. ``match`` generates videos for every caption (seeds from
1,000,000: noise never used in training or development) and asks, for each, whether it is
closer (mean squared pixel error over every frame) to a window of its own caption than to any
window of another caption; it prints the rate with its Wilson interval as JSON and writes a GIF
and a PNG grid: per caption, the nearest real window of that caption beside the first seed's
video.
"""

from __future__ import annotations

import argparse
import csv
import json
from fractions import Fraction
from pathlib import Path

import numpy as np

CAPTIONS = Path(__file__).with_name("captions.csv")
COLUMNS = 4  # (real | generated) pairs per row of the grid


def cut(src: Path, out: Path) -> None:
    """One video file per row of captions.csv (source frames first..last), with its caption."""
    import av

    from univid.video import save_video

    out.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader(CAPTIONS.open(encoding="utf-8")))
    frames: dict[str, tuple[list[np.ndarray], Fraction]] = {}
    for n, row in enumerate(rows):
        name = row["video"]
        if name not in frames:
            with av.open(str(src / name)) as container:
                stream = container.streams.video[0]
                decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
                frames[name] = (decoded, stream.average_rate)
        video, rate = frames[name]
        part = np.stack(video[int(row["first"]) : int(row["last"]) + 1])
        path = out / f"{n:02d}_{Path(name).stem}.mp4"
        save_video(part, path, fps=round(float(rate)))
        path.with_suffix(".txt").write_text(row["caption"] + "\n", encoding="utf-8")
        print(f"{path.name}: {len(part)} frames, {row['caption']}")


def match(run: Path, cache: Path, out: Path, seeds: list[int], steps: int | None) -> dict:
    """Generate one video per caption and seed, and judge whether each is nearest (mean squared
    pixel error over every frame) a window of its own caption rather than of any other."""
    import torch

    from univid.data.cache import CacheDataset
    from univid.eval.report import wilson_interval
    from univid.pipeline import Pipeline
    from univid.video import save_video, tile, to_uint8

    pipe = Pipeline.from_pretrained(run, device="cpu")
    ds = CacheDataset(cache)
    captions = sorted({clip["caption"] for clip in ds.clips})
    owner = np.array([captions.index(clip["caption"]) for clip in ds.clips])
    with torch.no_grad():
        real = np.concatenate(
            [to_uint8(pipe.autoencoder.decode(ds[i].latents[None].float())) for i in range(len(ds))]
        ).astype(np.float32)  # (windows, T, H, W, 3)
    results, pairs = [], []
    for seed in seeds:
        made = pipe.generate(captions, [seed] * len(captions), num_steps=steps)
        for c, caption in enumerate(captions):
            errors = ((made[c].astype(np.float32)[None] - real) ** 2).mean(axis=(1, 2, 3, 4))
            own, other = errors[owner == c].min(), errors[owner != c].min()
            results.append(
                {
                    "caption": caption,
                    "seed": seed,
                    "own_mse": round(float(own), 1),
                    "other_mse": round(float(other), 1),
                    "matched": bool(own < other),
                    "nearest_caption": captions[owner[int(np.argmin(errors))]],
                }
            )
            if seed == seeds[0]:  # the grid: nearest real window of its caption | generated
                window = int(np.flatnonzero(owner == c)[np.argmin(errors[owner == c])])
                pairs.append(tile(np.stack([real[window].astype(np.uint8), made[c]])))
    out.mkdir(parents=True, exist_ok=True)
    # Pairs (real | generated) in rows of COLUMNS, in caption order, blank where a row ends.
    pairs += [np.zeros_like(pairs[0])] * (-len(pairs) % COLUMNS)
    rows = [np.concatenate(pairs[k : k + COLUMNS], axis=2) for k in range(0, len(pairs), COLUMNS)]
    grid = np.concatenate(rows, axis=1)
    save_video(grid, out / "real-vs-generated.gif", fps=pipe.config.data.fps)
    save_video(grid[:1], out / "real-vs-generated.png")
    matched = sum(r["matched"] for r in results)
    summary = {
        "captions": len(captions),
        "seeds": seeds,
        "samples": len(results),
        "matched": matched,
        "rate": matched / len(results),
        "wilson95": wilson_interval(matched, len(results)),
        "captions_always_matched": sum(
            all(r["matched"] for r in results if r["caption"] == c) for c in captions
        ),
        "windows": len(ds),
        "results": results,
    }
    (out / "caption-matching.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cut", help="one video + caption per row of captions.csv")
    p.add_argument("src", type=Path, help="folder with bikes.mp4, carphone_pristine.mp4, ...")
    p.add_argument("out", type=Path)
    p = sub.add_parser("match", help="one sample per caption: is it nearest its own clips?")
    p.add_argument("run", type=Path, help="trained run or model folder")
    p.add_argument("cache", type=Path, help="the cache it was trained on")
    p.add_argument("--out", type=Path, default=Path("real-match"))
    p.add_argument("--seeds", type=int, default=4, help="samples per caption")
    p.add_argument(
        "--seed-offset", type=int, default=1_000_000, help="first seed (never used elsewhere)"
    )
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    args = parser.parse_args()
    if args.command == "cut":
        cut(args.src, args.out)
    else:
        seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
        summary = match(args.run, args.cache, args.out, seeds, args.steps)
        print(json.dumps({k: v for k, v in summary.items() if k != "results"}))


if __name__ == "__main__":
    main()
