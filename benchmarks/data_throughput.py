"""Data throughput: `univid prepare` clips/s, and the training loader against the model step.

Makes ``--clips`` real encoded videos with ffmpeg's testsrc (the ffmpeg of imageio-ffmpeg),
then measures

- ``check``: decoding and resizing only (``univid prepare --check``), clips/s;
- ``prepare``: decoding + pixel autoencoder + MiniLM text encoder + writing shards, clips/s;
- ``loader``: building one training batch from the cache (``Trainer.global_indices`` and
  ``Trainer.micro_batch``) against a whole ``Trainer.train_step`` of an S-size model on that
  batch: the loader's share of the step says whether data loading is the bottleneck.

Prints one JSON line per measurement. Example (the figures in docs/data.md):

    python benchmarks/data_throughput.py --clips 48 --size S --steps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import torch


def make_clips(folder: Path, count: int, seconds: float, fps: int, size: str) -> None:
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    folder.mkdir(parents=True)
    for i in range(count):
        source = ("testsrc", "testsrc2", "smptebars", "rgbtestsrc")[i % 4]
        path = folder / f"clip_{i:04d}.mp4"
        graph = f"{source}=size={size}:rate={fps}:duration={seconds}"
        subprocess.run(
            [ffmpeg, "-y", "-loglevel", "error", "-f", "lavfi", "-i", graph, "-c:v", "libx264"]
            + ["-pix_fmt", "yuv420p", "-preset", "ultrafast", str(path)],
            check=True,
        )
        path.with_suffix(".txt").write_text(f"test pattern {source} number {i}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--source-fps", type=int, default=24)
    parser.add_argument("--source-size", default="320x240")
    parser.add_argument("--bucket", default="8x32x32", help="FxHxW clips are cut to")
    parser.add_argument("--size", default="S", help="model preset for the step time")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from univid.bench.measure import alternate, time_once
    from univid.config import resolve_config
    from univid.data.buckets import parse_buckets
    from univid.data.cache import CacheDataset, PrepareSettings, check, prepare
    from univid.train.batches import config_for_cache
    from univid.train.loop import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_clips(root / "src", args.clips, args.seconds, args.source_fps, args.source_size)
        settings = PrepareSettings(buckets=tuple(parse_buckets(args.bucket)), fps=8.0)
        common = {"clips": args.clips, "source": f"{args.source_size}@{args.source_fps}fps"}

        (total, _, bad, _), seconds = time_once(
            lambda: check(root / "src", settings, progress=False)
        )
        row = {"bench": "check", **common, "bucket": args.bucket, "seconds": seconds}
        print(json.dumps({**row, "clips_per_s": total / seconds, "bad": len(bad)}), flush=True)

        report, seconds = time_once(
            lambda: prepare(root / "src", root / "cache", settings, progress=False)
        )
        row = {"bench": "prepare", **common, "bucket": args.bucket, "seconds": seconds}
        row |= {"autoencoder": "pixel", "text_encoder": "minilm", "bad": len(report.bad)}
        print(json.dumps({**row, "clips_per_s": report.clips / seconds}), flush=True)

        dataset = CacheDataset(root / "cache")
        cfg = resolve_config(
            args.size,
            [
                f"data.cache={root / 'cache'}",
                f"train.batch_size={args.batch_size}",
                f"train.steps={args.steps + 1}",
                "train.sample_every=0",
                "train.val_every=0",
            ],
        )
        cfg, _ = config_for_cache(cfg, dataset)
        trainer = Trainer(cfg, root / "run", progress=False, dataset=dataset)
        trainer.train_step()  # warm-up
        times = alternate(
            {
                "load": lambda: trainer.micro_batch(trainer.global_indices(), 0),
                "step": trainer.train_step,  # builds the same batch again, then trains on it
            },
            args.steps,
        )
        load_s, step_s = statistics.mean(times["load"]), statistics.mean(times["step"])
        print(
            json.dumps(
                {
                    "bench": "loader",
                    "model": args.size,
                    "batch_size": args.batch_size,
                    "bucket": args.bucket,
                    "threads": torch.get_num_threads(),
                    "loader_s_per_batch": load_s,
                    "loader_clips_per_s": args.batch_size / load_s,
                    "train_step_s": step_s,
                    "loader_share_of_step": load_s / step_s,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
