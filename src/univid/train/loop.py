"""The training loop: rectified flow on the shapes world, with EMA, checkpoints and samples.

Every random draw of step s (clip indices, caption dropout, t, noise) is a pure function of
(seed, s), so a resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from univid.build import build_model
from univid.config import Config
from univid.data.shapes import ShapesWorld, canonical_prompt
from univid.errors import ConfigError, InputError
from univid.eval.validation import ValidationSet
from univid.flow import flow_loss, logit_normal, uniform
from univid.pipeline import Pipeline, pick_device
from univid.text import TextEncoder
from univid.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from univid.video import save_video, tile

SAMPLE_PROMPTS = [
    canonical_prompt("red", "circle", "right"),
    canonical_prompt("green", "square", "up"),
    canonical_prompt("blue", "triangle", "left"),
    canonical_prompt("yellow", "circle", "down"),
]
METRICS = [
    "step",
    "loss",
    "grad_norm",
    "lr",
    "steps_per_s",
    "elapsed_s",
    "val_loss",
    "val_loss_ema",
]


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where asked for or where the device does it well ('auto' = CUDA with bf16)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def lr_factor(step: int, warmup: int, total: int, decay: str) -> float:
    """Linear warm-up to 1, then constant or cosine down to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, in place."""
    ema_params = list(ema.parameters())
    torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - decay)


def shapes_batch(cfg: Config, world: ShapesWorld, step: int) -> tuple[torch.Tensor, list[str]]:
    """Batch ``step``: clips (B, 3, T, H, W) in [-1, 1] and captions, some dropped to ''."""
    B = cfg.train.batch_size
    videos, captions = world.batch(range(step * B, (step + 1) * B))
    drop = np.random.default_rng([cfg.train.seed, step, 1]).random(B) < cfg.data.caption_dropout
    captions = ["" if d else c for c, d in zip(captions, drop)]
    x = torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    return x, captions


class Trainer:
    """Holds the run's state; :meth:`run` trains to ``cfg.train.steps``."""

    def __init__(self, cfg: Config, run_dir: Path, progress: bool = True) -> None:
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = pick_device(t.device)
        self.amp = autocast_dtype(t.precision, self.device)
        torch.manual_seed(t.seed)
        self.text = TextEncoder(cfg.text.encoder, cfg.text.max_length, device=self.device)
        if self.text.dim != cfg.model.text_dim:
            raise ConfigError(
                f"model.text_dim={cfg.model.text_dim} does not match the text encoder's "
                f"width {self.text.dim}"
            )
        self.model = build_model(cfg.model).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.99)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, t.warmup, t.steps, t.decay)
        )
        self.world = ShapesWorld(cfg.data.frames, cfg.data.height, cfg.data.width, seed=t.seed)
        self.val: ValidationSet | None = None  # built at the first validation
        self.step = 0

    def resume(self) -> Path:
        """Continue from the newest complete checkpoint of the run folder."""
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise InputError(f"no complete checkpoint to resume from in {self.run_dir}")
        self.step = load_checkpoint(path, self.model, self.ema, self.optimizer, self.scheduler)
        return path

    def loss(self, step: int) -> torch.Tensor:
        """Rectified-flow loss of batch ``step`` (forward only)."""
        cfg = self.cfg
        x, captions = shapes_batch(cfg, self.world, step)
        text, mask = self.text.encode(captions)
        gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + step)
        n = x.shape[0]
        if cfg.flow.time_sampling == "uniform":
            t = uniform(n, generator=gen)
        else:
            t = logit_normal(n, cfg.flow.logit_mean, cfg.flow.logit_std, generator=gen)
        noise = torch.randn(x.shape, generator=gen)
        x, t, noise = (v.to(self.device, non_blocking=True) for v in (x, t, noise))
        with torch.autocast(
            self.device.type, dtype=self.amp or torch.float32, enabled=bool(self.amp)
        ):
            return flow_loss(lambda xt, tt: self.model(xt, tt, text, mask), x, noise, t)

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns (loss, grad norm) as device tensors (no host sync)."""
        self.model.train()
        loss = self.loss(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.train.grad_clip or float("inf")
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.scheduler.step()
        decay = min(self.cfg.train.ema_decay, (1 + step) / (10 + step))
        ema_update(self.ema, self.model, decay)
        return loss.detach(), grad_norm.detach()

    def run(self) -> dict[str, Any]:
        """Train to the configured number of steps; returns the last metrics row."""
        t = self.cfg.train
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(self.cfg.to_json(), encoding="utf-8")
        except OSError as exc:
            raise InputError(
                f"cannot write the run folder {self.run_dir}: {exc.strerror}"
            ) from None
        logger = MetricsLogger(self.run_dir)
        bar = tqdm(total=t.steps, initial=self.step, desc="train", disable=not self.progress)
        sums = torch.zeros(2, device=self.device)
        start, last, count, row = time.perf_counter(), time.perf_counter(), 0, {}
        try:
            for step in range(self.step, t.steps):
                sums += torch.stack(self.train_step(step))
                count += 1
                self.step = step + 1
                bar.update()
                validate = t.val_every and (self.step % t.val_every == 0 or self.step == t.steps)
                if self.step % t.log_every == 0 or self.step == t.steps or validate:
                    row = self._log_row(sums / count, count, last, start)
                    if validate:
                        row.update(self.validation_losses())
                    logger.log(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    sums.zero_()
                    last, count = time.perf_counter(), 0
                if t.sample_every and self.step % t.sample_every == 0:
                    self.write_samples()
                if self.step % t.ckpt_every == 0 or self.step == t.steps:
                    self.save()
        finally:
            # An interrupt may land inside an optimizer step, so only the periodic
            # checkpoints (always consistent) are trusted; nothing is saved here.
            bar.close()
            logger.close()
        return row

    def _log_row(
        self, means: torch.Tensor, count: int, last: float, start: float
    ) -> dict[str, float]:
        now = time.perf_counter()
        loss, gnorm = means.tolist()  # the loop's only host sync
        return {
            "step": self.step,
            "loss": loss,
            "grad_norm": gnorm,
            "lr": self.scheduler.get_last_lr()[0],
            "steps_per_s": count / (now - last),
            "elapsed_s": now - start,
        }

    def validation_losses(self) -> dict[str, float]:
        """Fixed validation loss of the trained weights and of their EMA."""
        if self.val is None:
            self.val = ValidationSet(self.cfg, self.text)
        return {
            "val_loss": self.val.loss(self.model)["val_loss"],
            "val_loss_ema": self.val.loss(self.ema)["val_loss"],
        }

    def save(self) -> Path:
        return save_checkpoint(
            self.run_dir,
            self.step,
            self.model,
            self.ema,
            self.optimizer,
            self.scheduler,
            self.cfg.to_json(),
            self.cfg.train.keep_last,
        )

    def write_samples(self) -> Path:
        """A GIF of the EMA model's videos for a few fixed prompts, side by side."""
        pipe = Pipeline(self.ema, self.text, self.cfg)
        videos = pipe.generate(SAMPLE_PROMPTS, list(range(len(SAMPLE_PROMPTS))))
        path = self.run_dir / "samples" / f"step_{self.step:08d}.gif"
        path.parent.mkdir(exist_ok=True)
        return save_video(tile(videos), path, fps=self.cfg.data.fps, scale=4)


class MetricsLogger:
    """metrics.csv always; TensorBoard too when it is installed."""

    def __init__(self, run_dir: Path) -> None:
        path = run_dir / "metrics.csv"
        new = not path.exists()
        self.file = path.open("a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, fieldnames=METRICS, restval="")
        if new:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            self.tb = None

    def log(self, row: dict[str, float]) -> None:
        self.writer.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for key in ("loss", "grad_norm", "lr", "steps_per_s", "val_loss", "val_loss_ema"):
                if key in row:
                    self.tb.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(
    cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (or continue it); returns the last metrics row."""
    trainer = Trainer(cfg, Path(run_dir), progress=progress)
    if resume:
        trainer.resume()
    return trainer.run()
