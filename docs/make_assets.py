"""Regenerate the README's sample GIF from the bundled model: python docs/make_assets.py"""

from pathlib import Path

import numpy as np

import univid
from univid.video import save_video, tile

PROMPTS = [
    "a red circle moving right",
    "a green square moving up",
    "a blue triangle moving left",
    "a yellow circle moving down",
    "a magenta square moving right",
    "a cyan triangle moving down",
    "a white circle moving left",
    "a red triangle moving up",
]


def main() -> None:
    pipe = univid.Pipeline.from_pretrained("shapes-tiny", device="cpu")
    videos = pipe(PROMPTS, seed=0)  # (8, T, H, W, 3)
    gap = np.zeros_like(videos[:, :, :, :2])  # thin black gutters between videos
    videos = np.concatenate([videos, gap], axis=3)
    grid = np.concatenate([tile(videos[:4]), tile(videos[4:])], axis=1)  # (T, 2H, 4W', 3)
    out = Path(__file__).parent / "assets" / "samples.gif"
    save_video(grid, out, fps=pipe.config.data.fps, scale=4)
    print(out)


if __name__ == "__main__":
    main()
