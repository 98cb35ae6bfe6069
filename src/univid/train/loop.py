"""The training loop: rectified flow with EMA, checkpoints, samples, on one or many processes.

Every random draw of a training sample (which clip, caption dropout, t, noise) is a pure
function of (seed, stream position), and :class:`univid.data.sampler.StreamSampler` says which
positions each rank takes. A resumed run therefore sees exactly the samples an uninterrupted
run would have seen, and N ranks with batch B see what one process with batch N x B sees.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from univid.config import Config
from univid.data import BadSample
from univid.data.buckets import BucketSampler, bucket_name
from univid.data.cache import CacheDataset, CachedClip, config_for_cache
from univid.data.sampler import StreamSampler
from univid.data.shapes import ShapesWorld, canonical_prompt
from univid.errors import ConfigError, InputError, TrainingAborted
from univid.eval.validation import ValidationSet
from univid.files import atomic_write
from univid.flow import flow_loss_per_sample, logit_normal, uniform
from univid.parallel import close_distributed, init_distributed, local, parallelize, unwrap
from univid.pipeline import Pipeline
from univid.speed import autocast_dtype
from univid.text import TextEncoder, pad_states
from univid.train.checkpoint import (
    crash_point,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
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
    "samples",
    "skipped",
    "nonfinite",
]


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
    """ema <- decay * ema + (1 - decay) * model, in place (shard by shard under FSDP)."""
    ema_params = [local(p) for p in ema.parameters()]
    torch._foreach_lerp_(ema_params, [local(p).detach() for p in model.parameters()], 1 - decay)


@dataclass
class MicroBatch:
    """One rank's share of one micro-batch, with its random draws."""

    x: torch.Tensor  # (B, C, T, H, W) in [-1, 1] or latents; zeros where a sample was bad
    captions: list[str]
    text: torch.Tensor | None  # cached caption states (B, L, D), or None: encode the captions
    text_mask: torch.Tensor | None  # (B, L) True on real tokens
    t: torch.Tensor  # (B,)
    noise: torch.Tensor  # like x
    weight: torch.Tensor  # (B,) 1 for a usable sample, 0 for a skipped one
    skipped: list[tuple[int, str]]  # (dataset index, reason)
    indices: list[int]  # dataset index of every sample


class Trainer:
    """Holds the run's state; :meth:`run` trains to ``cfg.train.steps``.

    ``dataset`` (default: the cache of ``data.cache``, else the shapes world of the config) is
    indexable, returns ``(video uint8 (T, H, W, 3), caption, ...)`` or a
    :class:`univid.data.cache.CachedClip`, and raises :class:`BadSample` for an item it cannot
    use; it may define ``__len__`` (otherwise it is unbounded), ``buckets`` (bucket -> indices:
    each batch then comes from one bucket) and ``placeholder(i)`` (what a bad item's place in a
    batch holds)."""

    def __init__(
        self, cfg: Config, run_dir: Path, progress: bool = True, dataset: Any = None
    ) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.dist = init_distributed(cfg)
        self.progress = progress and self.dist.main
        self.device = self.dist.device
        self.amp = autocast_dtype(t.precision, self.device)
        torch.manual_seed(t.seed)
        d = cfg.data
        if dataset is None and d.cache:
            dataset = CacheDataset(d.cache)
        self.cached = isinstance(dataset, CacheDataset)
        self._text: TextEncoder | None = None
        if self.cached and dataset.text_dim != cfg.model.text_dim:
            raise ConfigError(
                f"model.text_dim={cfg.model.text_dim} does not match the cache's text states "
                f"(width {dataset.text_dim})"
            )
        if not self.cached:
            _ = self.text  # load it now: a mismatch should fail before any training
        self.model, self.ema = parallelize(cfg, self.dist, self.amp)
        self.net = unwrap(self.model)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.99)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, t.warmup, t.steps, t.decay)
        )
        self.dataset = (
            dataset
            if dataset is not None
            else ShapesWorld(d.frames, d.height, d.width, seed=t.seed)
        )
        size = len(self.dataset) if hasattr(self.dataset, "__len__") else None
        self.global_batch = t.batch_size * self.dist.world * t.grad_accum
        buckets = getattr(self.dataset, "buckets", None)
        self.sampler: StreamSampler | BucketSampler
        if buckets:
            self.bucket_batch = {b: self.per_rank_batch(b) for b in buckets}
            share = self.dist.world * t.grad_accum
            self.sampler = BucketSampler(
                buckets, {b: n * share for b, n in self.bucket_batch.items()}, seed=t.seed
            )
        else:
            self.sampler = StreamSampler(size, seed=t.seed)
        self.val: ValidationSet | None = None  # built at the first validation
        self.pipe: Pipeline | None = None  # built at the first sample video
        # Sample videos show fixed prompts: the shapes world's, or a cache's first captions.
        self.sample_clips = list(range(min(4, len(self.dataset)))) if self.cached else []
        self.sample_prompts = (
            [self.dataset.clips[i]["caption"] for i in self.sample_clips]
            if self.cached
            else SAMPLE_PROMPTS
        )
        self.step = 0  # optimizer steps taken
        self.batches_seen = 0  # global batches consumed (updates + skipped steps)
        self.samples_seen = 0  # stream positions consumed
        self.skipped = 0  # samples skipped as bad, over all ranks
        self.nonfinite = 0  # steps skipped for a NaN/inf loss or gradient
        self.nonfinite_run = 0  # ... of them in a row, up to now
        self.gnorm_mean: float | None = None  # running mean of the gradient norm
        self.good_steps = 0  # updates since start or resume (spikes are judged after 10)

    @property
    def text(self) -> TextEncoder:
        """The frozen text encoder, loaded on first use (a cached run may never need it)."""
        if self._text is None:
            c = self.cfg.text
            self._text = TextEncoder(c.encoder, c.max_length, self.device, padding=c.padding)
            if self._text.dim != self.cfg.model.text_dim:
                raise ConfigError(
                    f"model.text_dim={self.cfg.model.text_dim} does not match the text "
                    f"encoder's width {self._text.dim}"
                )
        return self._text

    def per_rank_batch(self, bucket: tuple[int, int, int]) -> int:
        """Clips per rank and micro-batch from ``bucket``: ``train.batch_size``, or as many as
        ``data.tokens_per_batch`` video tokens allow (at least 1)."""
        budget = self.cfg.data.tokens_per_batch
        if not budget:
            return self.cfg.train.batch_size
        shape = self.dataset.latent_shapes[bucket][1:]
        tokens = math.prod(s // p for s, p in zip(shape, self.cfg.model.patch))
        return max(1, budget // tokens)

    def resume(self) -> Path:
        """Continue from the newest complete checkpoint of the run folder."""
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise InputError(f"no complete checkpoint to resume from in {self.run_dir}")
        meta = load_checkpoint(path, self.dist, self.model, self.ema, self.optimizer)
        self.scheduler.load_state_dict(meta["scheduler"])
        self.step, self.samples_seen = int(meta["step"]), int(meta["samples_seen"])
        self.batches_seen = int(meta.get("batches_seen", self.samples_seen // self.global_batch))
        self.skipped, self.nonfinite = int(meta["skipped"]), int(meta["nonfinite"])
        return path

    def global_indices(self) -> list[int]:
        """Dataset indices of the next global batch (every rank computes the same list)."""
        if isinstance(self.sampler, BucketSampler):
            return self.sampler.batch(self.batches_seen)
        return self.sampler.indices(range(self.samples_seen, self.samples_seen + self.global_batch))

    def micro_batch(self, indices: list[int], micro: int) -> MicroBatch:
        """This rank's part of micro-batch ``micro`` of the global batch ``indices``; ranks own
        contiguous slices, and sample j's random draws depend only on (seed, stream position)."""
        cfg, t, d = self.cfg, self.cfg.train, self.cfg.data
        per = len(indices) // (self.dist.world * t.grad_accum)
        first = (self.dist.rank * t.grad_accum + micro) * per
        xs, captions, states, times, noises, weight, skipped = [], [], [], [], [], [], []
        for j in range(first, first + per):
            p, index = self.samples_seen + j, indices[j]
            try:
                item = self.dataset[index]
                weight.append(1.0)
            except BadSample as exc:
                item = self._placeholder(index)
                weight.append(0.0)
                skipped.append((index, str(exc) or type(exc).__name__))
            drop = np.random.default_rng([t.seed, p, 1]).random() < d.caption_dropout
            if isinstance(item, CachedClip):
                x = item.latents
                captions.append("" if drop else item.caption)
                states.append(self.dataset.null_text if drop else item.text)
            else:
                video, caption = item[:2]
                x = torch.from_numpy(np.ascontiguousarray(video)).permute(3, 0, 1, 2)
                x = x.float() / 127.5 - 1.0
                captions.append("" if drop else caption)
            gen = torch.Generator().manual_seed(t.seed * 1_000_003 + p)
            if cfg.flow.time_sampling == "uniform":
                times.append(uniform(1, generator=gen))
            else:
                times.append(logit_normal(1, cfg.flow.logit_mean, cfg.flow.logit_std, gen))
            noises.append(torch.randn(x.shape, generator=gen))
            xs.append(x)
        text = mask = None
        if states:
            length = cfg.text.max_length if cfg.text.padding == "max_length" else 0
            text, mask = pad_states(states, self.dataset.text_dim, length)
        return MicroBatch(
            x=torch.stack(xs),
            captions=captions,
            text=text,
            text_mask=mask,
            t=torch.cat(times),
            noise=torch.stack(noises),
            weight=torch.tensor(weight),
            skipped=skipped,
            indices=[indices[j] for j in range(first, first + per)],
        )

    def _placeholder(self, index: int) -> Any:
        if hasattr(self.dataset, "placeholder"):
            return self.dataset.placeholder(index)
        d = self.cfg.data
        return np.zeros((d.frames, d.height, d.width, self.cfg.model.in_channels), np.uint8), ""

    def autocast(self, enabled: bool = True) -> torch.autocast:
        """Mixed precision of the run (``train.precision``); a no-op in fp32."""
        return torch.autocast(
            self.device.type, dtype=self.amp or torch.float32, enabled=enabled and bool(self.amp)
        )

    def per_sample_loss(self, batch: MicroBatch) -> torch.Tensor:
        """Rectified-flow loss of each sample of ``batch`` (forward only), shape (B,)."""
        if batch.text is not None:
            text, mask = batch.text.to(self.device), batch.text_mask.to(self.device)
        else:
            text, mask = self.text.encode(batch.captions)
        x, t, noise = (
            v.to(self.device, non_blocking=True) for v in (batch.x, batch.t, batch.noise)
        )
        with self.autocast():
            return flow_loss_per_sample(lambda xt, tt: self.model(xt, tt, text, mask), x, noise, t)

    def _sync_gradients(self, last: bool) -> Any:
        """Reduce gradients across ranks only on the last micro-batch of a step."""
        if isinstance(self.model, nn.parallel.DistributedDataParallel) and not last:
            return self.model.no_sync()
        if self.dist.mode == "fsdp":
            self.model.set_requires_gradient_sync(last)
        return nullcontext()

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One optimizer step at the current stream position.

        Returns (this rank's share of the global mean loss, global grad norm) as device tensors,
        or None when there was no update: every sample of the global batch was bad (the step
        counts), or the loss or gradient was not finite (the step does not count; optimizer,
        schedule, EMA and step counter stay as they were, and the data moves on)."""
        t, d = self.cfg.train, self.dist
        self.model.train()
        indices = self.global_indices()
        batches = [self.micro_batch(indices, m) for m in range(t.grad_accum)]
        local_valid = torch.stack([b.weight.sum() for b in batches]).sum()
        valid = int(d.sum(local_valid).item())  # all ranks agree on it: all take the same path
        self._log_skipped([s for b in batches for s in b.skipped])
        self.skipped += len(indices) - valid
        self.samples_seen += len(indices)
        self.batches_seen += 1
        self._check_bad_fraction()
        if valid == 0:
            self.step += 1
            return None
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for m, batch in enumerate(batches):
            with self._sync_gradients(m == len(batches) - 1):
                weighted = (self.per_sample_loss(batch) * batch.weight.to(self.device)).sum()
                # DDP and FSDP average gradients over ranks; scaling by the world size turns
                # that average into the mean over every usable sample of the global batch.
                (weighted * (d.world / valid)).backward()
                total += weighted.detach() / valid
        clip = t.grad_clip or float("inf")
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        if t.max_nonfinite and not self._all_finite(total, grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self._skip_nonfinite(total, grad_norm, [i for b in batches for i in b.indices])
            return None
        self.nonfinite_run = 0
        if t.spike_factor:
            self._watch_spikes(float(grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        decay = min(t.ema_decay, (1 + self.step) / (10 + self.step))
        ema_update(self.ema, self.model, decay)
        self.step += 1
        return total, grad_norm.detach()

    def _all_finite(self, loss_share: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Whether every rank's loss and the global gradient norm are finite (one host sync)."""
        bad = torch.stack([~torch.isfinite(loss_share), ~torch.isfinite(grad_norm)]).float()
        return not bool(self.dist.sum(bad).any().item())

    def _skip_nonfinite(
        self, loss_share: torch.Tensor, grad_norm: torch.Tensor, indices: list[int]
    ) -> None:
        self.nonfinite += 1
        self.nonfinite_run += 1
        self._log_anomaly(
            f"step {self.step + 1}: non-finite loss or gradient (loss share "
            f"{loss_share.item():.4g}, grad norm {grad_norm.item():.4g}); update skipped; "
            f"rank {self.dist.rank} batch indices {indices}",
            every_rank=True,
        )
        if self.nonfinite_run >= self.cfg.train.max_nonfinite:
            last = latest_checkpoint(self.run_dir)
            raise TrainingAborted(
                f"{self.nonfinite_run} steps in a row had a non-finite loss or gradient (the last "
                f"at step {self.step + 1}; train.max_nonfinite={self.cfg.train.max_nonfinite}); "
                f"the last good checkpoint is {last or 'none: no checkpoint was written yet'}. "
                f"Lower train.lr, raise train.warmup or check the batches listed in "
                f"{self.run_dir / 'anomalies.log'}"
            )

    def _watch_spikes(self, grad_norm: float) -> None:
        """Log a gradient norm far above its running mean (judged after 10 updates)."""
        mean, factor = self.gnorm_mean, self.cfg.train.spike_factor
        if mean is not None and self.good_steps >= 10 and grad_norm > factor * mean:
            self._log_anomaly(
                f"step {self.step + 1}: gradient-norm spike {grad_norm:.4g}, "
                f"{grad_norm / mean:.1f}x its running mean {mean:.4g}"
            )
        self.gnorm_mean = grad_norm if mean is None else 0.9 * mean + 0.1 * grad_norm
        self.good_steps += 1

    def _log_anomaly(self, message: str, every_rank: bool = False) -> None:
        """A line in anomalies.log (from each rank, or from rank 0) and on rank 0's stderr."""
        if not (every_rank or self.dist.main):
            return
        self._append_log("anomalies.log", [message])
        if self.dist.main:
            tqdm.write(f"univid: {message}", file=sys.stderr)

    def _append_log(self, name: str, lines: list[str]) -> None:
        """Append lines to a log file of the run folder (each rank writes its own lines)."""
        if not lines:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / name).open("a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)

    def _check_bad_fraction(self) -> None:
        """Stop when more than ``data.max_bad_fraction`` of the samples were bad (judged once
        10 global batches were read, so a few bad clips early on do not stop a run)."""
        limit = self.cfg.data.max_bad_fraction
        if self.batches_seen >= 10 and self.skipped > limit * self.samples_seen:
            raise TrainingAborted(
                f"{self.skipped} of {self.samples_seen} samples were bad, more than "
                f"data.max_bad_fraction={limit}; reasons in {self.run_dir / 'skipped.log'}"
            )

    def _log_skipped(self, skipped: list[tuple[int, str]]) -> None:
        prefix = f"step {self.step + 1} rank {self.dist.rank}"
        self._append_log("skipped.log", [f"{prefix} index {i}: {why}" for i, why in skipped])

    def run(self) -> dict[str, Any]:
        """Train to the configured number of steps; returns the last metrics row."""
        t, d = self.cfg.train, self.dist
        logger = self._start_run() if d.main else None
        bar = tqdm(total=t.steps, initial=self.step, desc="train", disable=not self.progress)
        sums = torch.zeros(2, device=self.device)
        start, last, count, row = time.perf_counter(), time.perf_counter(), 0, {}
        try:
            while self.step < t.steps:
                before = self.step
                result = self.train_step()
                if result is not None:
                    sums += torch.stack(result)
                    count += 1
                if self.step == before:  # a non-finite step: nothing to log, sample or save
                    continue
                bar.update()
                validate = t.val_every and (self.step % t.val_every == 0 or self.step == t.steps)
                if self.step % t.log_every == 0 or self.step == t.steps or validate:
                    means = sums / max(count, 1)
                    means[0] = d.sum(means[0])  # each rank holds its share of the mean loss
                    row = self._log_row(means, count, last, start)
                    if validate and (d.main or d.mode == "fsdp"):  # fsdp: forward is collective
                        row.update(self.validation_losses())
                    if logger is not None:
                        logger.log(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    sums.zero_()
                    last, count = time.perf_counter(), 0
                crash_point("step", self.step)
                if t.sample_every and self.step % t.sample_every == 0:
                    self.write_samples()
                if self.step % t.ckpt_every == 0 or self.step == t.steps:
                    self.save()
        finally:
            # An interrupt may land inside an optimizer step, so only the periodic
            # checkpoints (always consistent) are trusted; nothing is saved here.
            bar.close()
            if logger is not None:
                logger.close()
        if d.main and self.skipped:
            print(
                f"univid: skipped {self.skipped} bad samples; reasons in "
                f"{self.run_dir / 'skipped.log'}",
                file=sys.stderr,
            )
        return row

    def _start_run(self) -> MetricsLogger:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(self.cfg.to_json(), encoding="utf-8")
            trim_metrics(self.run_dir / "metrics.csv", self.step)
        except OSError as exc:
            raise InputError(
                f"cannot write the run folder {self.run_dir}: {exc.strerror}"
            ) from None
        d, t = self.dist, self.cfg.train
        if self.progress:
            layout = (
                f"{d.world} rank(s) x {t.grad_accum} accumulation step(s)"
                f"{f', parallel.mode={d.mode}' if d.mode != 'none' else ''}"
            )
            if isinstance(self.sampler, BucketSampler):
                sizes = ", ".join(f"{bucket_name(b)}: {n}" for b, n in self.bucket_batch.items())
                message = f"global batch per bucket = ({sizes}) per rank x {layout}"
            else:
                message = f"global batch {self.global_batch} = {t.batch_size} per rank x {layout}"
            print(
                f"univid: {message}",
                file=sys.stderr,
            )
        return MetricsLogger(self.run_dir)

    def _log_row(
        self, means: torch.Tensor, count: int, last: float, start: float
    ) -> dict[str, float]:
        now = time.perf_counter()
        loss, gnorm = means.tolist()  # the loop's only host sync
        return {
            "step": self.step,
            "loss": loss if count else float("nan"),
            "grad_norm": gnorm if count else float("nan"),
            "lr": self.scheduler.get_last_lr()[0],
            "steps_per_s": count / (now - last),
            "elapsed_s": now - start,
            "samples": self.samples_seen,
            "skipped": self.skipped,
            "nonfinite": self.nonfinite,
        }

    def validation_losses(self) -> dict[str, float]:
        """Fixed validation loss of the trained weights and of their EMA."""
        if self.val is None:
            if self.cached:
                self.val = ValidationSet.from_cache(self.dataset, self.cfg.train.val_clips)
            else:
                self.val = ValidationSet(self.cfg, self.text)
        # FSDP's bf16 policy gathers the trained weights in bf16, so they need autocast; the
        # other modes (and every EMA) validate in fp32.
        with self.autocast(enabled=self.dist.mode == "fsdp"):
            trained = self.val.loss(self.net)["val_loss"]
        return {"val_loss": trained, "val_loss_ema": self.val.loss(self.ema)["val_loss"]}

    def save(self) -> Path:
        state = {
            "step": self.step,
            "samples_seen": self.samples_seen,
            "batches_seen": self.batches_seen,
            "skipped": self.skipped,
            "nonfinite": self.nonfinite,
            "world": self.dist.world,
            "global_batch": self.global_batch,
            "scheduler": self.scheduler.state_dict(),
        }
        return save_checkpoint(
            self.run_dir,
            self.dist,
            self.model,
            self.ema,
            self.optimizer,
            state,
            self.cfg.to_json(),
            self.cfg.train.keep_last,
        )

    def write_samples(self) -> Path | None:
        """A GIF of the EMA model's videos for a few fixed prompts, side by side (rank 0)."""
        if not (self.dist.main or self.dist.mode == "fsdp"):
            return None
        if self.pipe is None:
            text = (
                self.dataset.text_encoder(self.sample_clips, self.device)
                if self.cached
                else self.text
            )
            self.pipe = Pipeline(self.ema, text, self.cfg)
        prompts = self.sample_prompts
        videos = self.pipe.generate(prompts, list(range(len(prompts))))
        if not self.dist.main:
            return None
        path = self.run_dir / "samples" / f"step_{self.step:08d}.gif"
        path.parent.mkdir(exist_ok=True)
        return save_video(tile(videos), path, fps=self.cfg.data.fps, scale=4)


def trim_metrics(path: Path, step: int) -> None:
    """Drop the rows after ``step``: a crashed attempt logged them, the resumed run redoes them."""
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
    if len(kept) < len(rows):

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(kept)

        atomic_write(path, write)


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
            for key in (
                "loss",
                "grad_norm",
                "lr",
                "steps_per_s",
                "val_loss",
                "val_loss_ema",
                "skipped",
                "nonfinite",
            ):
                if key in row:
                    self.tb.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(
    cfg: Config,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    dataset: Any = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (or continue it); returns the last metrics row.

    Under torchrun every rank calls this; ``cfg.parallel.mode`` says how they share the work.
    ``dataset`` replaces the config's shapes world (see :class:`Trainer`); with ``data.cache``
    set, the cache decides the channels, text encoder, autoencoder and sample shape."""
    if dataset is None and cfg.data.cache:
        dataset = CacheDataset(cfg.data.cache)
        cfg, note = config_for_cache(cfg, dataset)
        if progress and os.environ.get("RANK", "0") == "0":
            print(f"univid: {note}", file=sys.stderr)
    trainer = Trainer(cfg, Path(run_dir), progress=progress, dataset=dataset)
    try:
        if resume:
            path = trainer.resume()
            if trainer.dist.main and progress:
                print(f"univid: resuming from {path} (step {trainer.step})", file=sys.stderr)
        return trainer.run()
    finally:
        close_distributed(trainer.dist)
