"""Regenerate the README's GIFs from the bundled model: python docs/make_assets.py

``samples.gif``: text to video for eight prompts (seed 0). ``i2v.gif``, ``extend.gif`` and
``interpolate.gif``: four prompts each, given the frames of a held-out shapes-world clip as
``univid eval --mode`` gives them (seed 0); a given frame wears an orange frame.

``python docs/make_assets.py lora LORA_RUN FULL_RUN`` makes ``lora.gif`` instead: four prompts
with the concepts the bundled model never saw (seed 0), a row each for the base, the base with
the LoRA adapter, and the fully fine-tuned model (the runs of benchmarks/lora_concepts.py).

``python docs/make_assets.py few_step`` makes ``few_step.gif``: four prompts (seed 0), a row
each for the bundled teacher at 25 steps and its few-step student at 4, 2 and 1 steps.

``python docs/make_assets.py stream`` makes ``stream.gif``: 256 frames streamed by the bundled
streaming model ``shapes-long`` for four prompts (seed 0), and ``stream_prompt_at.gif``: one
video whose prompt changes at frame 64.
"""

import sys
from pathlib import Path

import numpy as np

import univid
from univid.data.shapes import render
from univid.eval.modes import conditioning_clip, given_indices
from univid.video import save_video, tile, upscale

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
SCALE = 4
MARK = np.array([255, 140, 0], np.uint8)  # the orange frame around given frames
OUT = Path(__file__).parent / "assets"


def gutter(videos: np.ndarray) -> np.ndarray:
    """Thin black gutters right of each (N, T, H, W, 3) video."""
    return np.concatenate([videos, np.zeros_like(videos[:, :, :, : 2 * SCALE // 4])], axis=3)


def text_to_video(pipe: univid.Pipeline) -> None:
    videos = gutter(pipe(PROMPTS, seed=0))  # (8, T, H, W, 3)
    grid = np.concatenate([tile(videos[:4]), tile(videos[4:])], axis=1)  # (T, 2H, 4W', 3)
    print(save_video(grid, OUT / "samples.gif", fps=pipe.config.data.fps, scale=SCALE))


def with_given(pipe: univid.Pipeline, mode: str, prompts: list[str]) -> None:
    d = pipe.config.data
    indices = given_indices(mode, d.frames)
    videos = []
    for prompt in prompts:
        colour, shape, _, direction = prompt.split()[1:]
        clip = conditioning_clip(colour, shape, direction, 0, d.height, d.width)
        truth = render(clip, d.frames, d.height, d.width)
        video = upscale(pipe(prompt, seed=0, images={i: truth[i] for i in indices}), SCALE)
        for i in indices:  # an orange frame, drawn over the video's own edge pixels
            video[i, :2], video[i, -2:], video[i, :, :2], video[i, :, -2:] = (MARK,) * 4
        videos.append(video)
    grid = tile(gutter(np.stack(videos)))
    print(save_video(grid, OUT / f"{mode}.gif", fps=d.fps))


NOVEL = [
    "an orange circle moving right",
    "a white diamond moving down",
    "an orange diamond moving left",
    "a green diamond moving up",
]


def lora_rows(lora: str, full: str) -> None:
    base = univid.Pipeline.from_pretrained("shapes-tiny", device="cpu")
    rows = [base(NOVEL, seed=0), base.load_lora(lora)(NOVEL, seed=0)]
    rows.append(univid.Pipeline.from_pretrained(full, device="cpu")(NOVEL, seed=0))
    grid = np.concatenate([tile(gutter(upscale(r, SCALE))) for r in rows], axis=1)
    print(save_video(grid, OUT / "lora.gif", fps=base.config.data.fps))


def few_step_rows() -> None:
    teacher = univid.Pipeline.from_pretrained("shapes-tiny", device="cpu")
    student = univid.Pipeline.from_pretrained("shapes-tiny-fast", device="cpu")
    rows = [teacher(PROMPTS[:4], seed=0)]
    rows += [student(PROMPTS[:4], seed=0, num_steps=steps) for steps in (4, 2, 1)]
    grid = np.concatenate([tile(gutter(upscale(r, SCALE))) for r in rows], axis=1)
    print(save_video(grid, OUT / "few_step.gif", fps=teacher.config.data.fps))


def stream_videos() -> None:
    pipe = univid.Pipeline.from_pretrained("shapes-long", device="cpu")
    fps = pipe.config.data.fps
    chunks = pipe.stream_batch({0: PROMPTS[:4]}, [0] * 4, 256)
    videos = np.concatenate(list(chunks), axis=1)  # (4, 256, H, W, 3)
    print(save_video(tile(gutter(upscale(videos, 2))), OUT / "stream.gif", fps=fps))
    switched = pipe.stream(PROMPTS[0], 128, prompt_at={64: PROMPTS[1]})
    print(save_video(np.stack(list(switched)), OUT / "stream_prompt_at.gif", fps=fps, scale=3))


def main() -> None:
    if sys.argv[1:2] == ["stream"]:
        stream_videos()
        return
    if sys.argv[1:2] == ["lora"]:
        lora_rows(*sys.argv[2:4])
        return
    if sys.argv[1:2] == ["few_step"]:
        few_step_rows()
        return
    pipe = univid.Pipeline.from_pretrained("shapes-tiny", device="cpu")
    text_to_video(pipe)
    for mode, prompts in (
        ("i2v", PROMPTS[:4]),
        ("extend", PROMPTS[4:]),
        ("interpolate", PROMPTS[1:5]),
    ):
        with_given(pipe, mode, prompts)


if __name__ == "__main__":
    main()
