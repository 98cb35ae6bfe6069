"""Statistics of raw TAEF2 latents on real frames, and TAEF2's reconstruction PSNR on them.

Takes ``--frames`` frames spread evenly over each video (centre crops of ``--width`` x
``--height``, univid's own reader), encodes them with the bundled TAEF2 *without* univid's
normalisation and prints one JSON line per video and one for all of them: mean and std of the
raw latents (global and the range of the per-channel figures) and the PSNR of decode(encode(x)).

    python benchmarks/taef2_latent_stats.py ../shared/realdata/*.mp4 --frames 16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from univid.autoencoder.taef2 import load_taef2
from univid.data.decode import ClipSpec, probe, read_clip


def frames_of(path: Path, count: int, height: int, width: int) -> torch.Tensor:
    """``(count, 3, height, width)`` in [0, 1]: frames spread evenly over the video."""
    total = probe(path).frames
    stride = max(1, (total - 1) // max(1, count - 1))
    count = min(count, 1 + (total - 1) // stride)
    clip = read_clip(path, ClipSpec(count, height, width, fps=25.0, stride=stride))
    return torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255


def stats(z: torch.Tensor) -> dict[str, float]:
    per_mean = z.mean(dim=(0, 2, 3))
    per_std = z.std(dim=(0, 2, 3))
    return {
        "mean": round(z.mean().item(), 4),
        "std": round(z.std().item(), 4),
        "channel_mean_min": round(per_mean.min().item(), 3),
        "channel_mean_max": round(per_mean.max().item(), 3),
        "channel_std_min": round(per_std.min().item(), 3),
        "channel_std_max": round(per_std.max().item(), 3),
    }


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).pow(2).mean().clamp_min(1e-12)
    return round(float(10 * torch.log10(1 / mse)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    taef2 = load_taef2()
    latents, originals, decoded = [], [], []
    with torch.no_grad():
        for path in args.videos:
            x = frames_of(path, args.frames, args.height, args.width)
            z = taef2.encoder(x)
            y = taef2.decoder(z).clamp(0, 1)
            y = (y * 255).round() / 255  # as a written video would hold it
            row = {"video": path.name, "frames": len(x), **stats(z), "psnr_db": psnr(x, y)}
            print(json.dumps(row), flush=True)
            latents.append(z)
            originals.append(x)
            decoded.append(y)
    z, x, y = torch.cat(latents), torch.cat(originals), torch.cat(decoded)
    row = {"video": "all", "frames": len(x), **stats(z), "psnr_db": psnr(x, y)}
    row["size"] = f"{args.width}x{args.height}"
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
