"""What a run shows of its model as it trains: the fixed validation loss and sample videos."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from univid.config import Config
from univid.data.cache import CacheDataset
from univid.data.shapes import canonical_prompt
from univid.device import autocast
from univid.errors import InputError
from univid.eval.validation import ValidationSet
from univid.parallel import Dist
from univid.pipeline import Pipeline
from univid.text import TextEncoder
from univid.text.clean import clean_text
from univid.video import save_video, tile

SAMPLE_PROMPTS = [
    canonical_prompt("red", "circle", "right"),
    canonical_prompt("green", "square", "up"),
    canonical_prompt("blue", "triangle", "left"),
    canonical_prompt("yellow", "circle", "down"),
]
# With data.novel_fraction > 0 the last two sample prompts show the novel concepts instead.
NOVEL_SAMPLE_PROMPTS = [
    canonical_prompt("orange", "square", "right"),
    canonical_prompt("white", "diamond", "down"),
]


class Previews:
    """Validation losses and sample GIFs of a run, each built on first use.

    Sample videos show fixed prompts: the shapes world's, or a cache's first captions that are
    usable prompts (a cache made before captions were cleaned may hold others: they are skipped,
    with one line on stderr, so that they can never stop a run)."""

    def __init__(
        self, cfg: Config, dist: Dist, dataset: Any, text: Callable[[], TextEncoder]
    ) -> None:
        self.cfg, self.dist, self.dataset, self.text = cfg, dist, dataset, text
        self.cached = isinstance(dataset, CacheDataset)
        self.clips, self.prompts = self._first_captions(4) if self.cached else ([], SAMPLE_PROMPTS)
        if not self.cached and cfg.data.novel_fraction:
            self.prompts = SAMPLE_PROMPTS[:2] + NOVEL_SAMPLE_PROMPTS
        self.val: ValidationSet | None = None
        self.pipe: Pipeline | None = None

    def _first_captions(self, count: int) -> tuple[list[int], list[str]]:
        """The first ``count`` cached clips with distinct captions that are usable prompts (the
        windows of one video share its caption), and those prompts."""
        clips: list[int] = []
        prompts: list[str] = []
        refused: list[str] = []
        for i, clip in enumerate(self.dataset.clips):
            if len(clips) == count:
                break
            try:
                prompt = clean_text(clip["caption"], "caption")
            except InputError as exc:
                refused.append(f"clip {i}: {exc}")
                continue
            if prompt not in prompts:
                prompts.append(prompt)
                clips.append(i)
        if refused and self.cfg.train.sample_every and self.dist.main:
            print(
                f"univid: {len(refused)} cached caption(s) not used as sample prompts "
                f"(first: {refused[0]})",
                file=sys.stderr,
            )
        return clips, prompts

    def validation_losses(self, net: nn.Module, ema: nn.Module, amp: Any) -> dict[str, float]:
        """Fixed validation loss of the trained weights and of their EMA."""
        if self.val is None:
            if self.cached:
                self.val = ValidationSet.from_cache(self.dataset, self.cfg.train.val_clips)
            else:
                self.val = ValidationSet(self.cfg, self.text())
        # FSDP's bf16 policy gathers the trained weights in bf16, so they need autocast; the
        # other modes (and every EMA) validate in fp32.
        with autocast(self.dist.device, amp, enabled=self.dist.mode == "fsdp"):
            trained = self.val.loss(net)["val_loss"]
        return {"val_loss": trained, "val_loss_ema": self.val.loss(ema)["val_loss"]}

    def write_samples(self, ema: nn.Module, run_dir: Path, step: int) -> Path | None:
        """A GIF of the EMA model's videos for the fixed prompts, side by side (rank 0)."""
        if not (self.dist.main or self.dist.mode == "fsdp"):  # fsdp: the forward is collective
            return None
        if not self.prompts:  # a cache with no caption usable as a prompt: said at the start
            return None
        if self.pipe is None:
            device = self.dist.device
            text = self.dataset.text_encoder(self.clips, device) if self.cached else self.text()
            self.pipe = Pipeline(ema, text, self.cfg)
        videos = self.pipe.generate(self.prompts, list(range(len(self.prompts))))
        if not self.dist.main:
            return None
        path = run_dir / "samples" / f"step_{step:08d}.gif"
        path.parent.mkdir(exist_ok=True)
        return save_video(tile(videos), path, fps=self.cfg.data.fps, scale=4)
