"""The training loop: rectified flow with EMA, checkpoints, samples, on one or many processes.

One step (:meth:`Trainer.update`) takes the next global batch from :mod:`univid.train.batches`
(built ahead on a background thread when training on CUDA), runs forward and backward over its
micro-batches, clips the gradient and updates the weights, the LR schedule and the EMA. It reads
nothing back from the device: the loss, the gradient norm and the non-finite flag stay there
until the loop's next host event (a metrics row, checkpoint, sample or validation), when
:class:`univid.train.guards.UpdateGuard` reads them all at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from univid import memory
from univid.config import Config
from univid.data.cache import CacheDataset
from univid.device import autocast, autocast_dtype, cpu_flags, precision_name, precision_note
from univid.errors import ConfigError, InputError, UnividError
from univid.flow import average_velocity_loss, flow_loss_per_sample
from univid.lora import record_base
from univid.parallel import init_distributed, parallelize, unwrap
from univid.text import TextEncoder
from univid.train.batches import Batches, BatchPlan, GlobalBatch, MicroBatch, open_dataset
from univid.train.checkpoint import (
    check_resume,
    crash_point,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from univid.train.guards import Pending, UpdateGuard, check_bad_fraction
from univid.train.metrics import Interval, append_log, start_run
from univid.train.optim import ema_update, lr_factor, make_optimizer, rewind
from univid.train.paths import TeacherPaths, paths_folder
from univid.train.previews import Previews

__all__ = ["Trainer", "lr_factor"]

EXTRAS_LOG = "extras.log"  # validation or samples that failed and were skipped
SESSIONS_LOG = "sessions.jsonl"  # one line per start or resume: where and in which precision


class Trainer:
    """Holds the run's state; :meth:`run` trains to ``cfg.train.steps``.

    ``dataset`` (default: ``data.cache``, else the config's shapes world; see
    :func:`univid.train.batches.open_dataset`) is described in
    :class:`univid.train.batches.BatchPlan`. ``self.cfg`` is ``cfg`` with what a cache
    decides filled in."""

    def __init__(
        self, cfg: Config, run_dir: Path, progress: bool = True, dataset: Any = None
    ) -> None:
        self.run_dir = Path(run_dir)
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.dist = init_distributed(cfg)
        self.progress = progress and self.dist.main
        self.device = self.dist.device
        self.amp = autocast_dtype(t.precision, self.device)
        torch.manual_seed(t.seed)
        cfg = record_base(cfg)
        if dataset is None and cfg.distill.method:  # a student learns from its teacher's paths
            dataset = TeacherPaths(cfg, paths_folder(cfg, self.run_dir))
        self.cfg, self.dataset, note = open_dataset(cfg, dataset)
        cfg = self.cfg
        if note and self.progress:
            print(f"univid: {note}", file=sys.stderr)
        memory.check_fits(memory.training(cfg, self.dist.world), self.device, "training")
        cached = isinstance(self.dataset, CacheDataset)
        self._text: TextEncoder | None = None
        if cached and self.dataset.text_dim != cfg.model.text_dim:
            raise ConfigError(
                f"model.text_dim={cfg.model.text_dim} does not match the cache's text states "
                f"(width {self.dataset.text_dim})"
            )
        if not cached:
            _ = self.text  # load it now: a mismatch should fail before any training
        self.model, self.ema = parallelize(cfg, self.dist, self.amp)
        self.net = unwrap(self.model)
        self.optimizer, self.scheduler = make_optimizer(self.model, t)
        self.guard = UpdateGuard(
            self.model, self.optimizer, self.dist, self.run_dir, t.max_nonfinite, t.spike_factor
        )
        self.plan = BatchPlan(cfg, self.dist, self.dataset)
        self.global_batch = self.plan.global_batch
        self.batches: Batches | None = None  # started at the first step
        self.previews = Previews(cfg, self.dist, self.dataset, lambda: self.text)
        self.step = 0  # optimizer steps taken (ahead by the skipped updates not yet read back)
        self.batches_seen = 0  # global batches consumed (updates + skipped steps)
        self.samples_seen = 0  # stream positions consumed
        self.skipped = 0  # samples skipped as bad, over all ranks
        self.interval = Interval(self.device)  # loss and grad norm since the last row
        self.failed_extras: set[str] = set()  # extras that failed (said once on stderr)

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

    @property
    def nonfinite(self) -> int:
        return self.guard.nonfinite

    def resume(self) -> Path:
        """Continue from the newest complete checkpoint of the run folder."""
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise InputError(
                f"no complete checkpoint to resume from in {self.run_dir}: it stopped before its "
                "first; start it over (train without resume)"
            )
        check_resume(path, self.cfg.to_json(), self.global_batch)
        meta = load_checkpoint(path, self.dist, self.model, self.ema, self.optimizer)
        self.scheduler.load_state_dict(meta["scheduler"])
        self.step, self.samples_seen = int(meta["step"]), int(meta["samples_seen"])
        self.batches_seen = int(meta.get("batches_seen", self.samples_seen // self.global_batch))
        self.skipped, self.guard.nonfinite = int(meta["skipped"]), int(meta["nonfinite"])
        self.close()  # batches already built start where the checkpoint did not
        return path

    def update(self) -> None:
        """One optimizer step at the current stream position; reads nothing from the device.

        A global batch whose samples were all bad counts as a step without an update. A
        non-finite loss or gradient is undone on the device by the guard, and the step is
        given back when the flags are next read (:meth:`settle`)."""
        t = self.cfg.train
        self.model.train()
        batch, valid = self.next_batch()
        self.skipped += batch.size - valid
        self.samples_seen, self.batches_seen = batch.samples_seen, batch.batches_seen
        check_bad_fraction(
            self.skipped,
            self.samples_seen,
            self.batches_seen,
            self.cfg.data.max_bad_fraction,
            self.run_dir,
        )
        self.step += 1
        if valid == 0:  # nothing to learn from: the step counts, the weights stay
            self.guard.record(None)
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.backward(batch.micro, valid)
        grad_norm = self.clip_gradients()
        with self.guard.protect(loss, grad_norm) as ok:  # ok: () bool, stays on the device
            self.optimizer.step()
            self.scheduler.step()
        decay = min(t.ema_decay, self.step / (9 + self.step))
        ema_update(self.ema, self.model, (1 - decay) * ok)
        self.guard.record(Pending(ok, loss, grad_norm, batch.indices))
        self.interval.add(ok, loss, grad_norm)

    def next_batch(self) -> tuple[GlobalBatch, int]:
        """The next global batch from the background builder (started on first use) and its
        usable samples over all ranks: host arithmetic on one rank; under torchrun one small
        collective, since every rank must take the same path."""
        if self.batches is None:
            ahead = self.cfg.data.prefetch == "thread" or (
                self.cfg.data.prefetch == "auto" and self.device.type == "cuda"
            )
            self.batches = Batches(self.plan, self.samples_seen, self.batches_seen, ahead)
        batch = next(self.batches)
        prefix = f"step {self.step + 1} rank {self.dist.rank}"
        lines = [f"{prefix} index {i}: {why}" for i, why in batch.skipped]
        append_log(self.run_dir, "skipped.log", lines)
        if self.dist.world == 1:
            return batch, batch.usable
        return batch, int(self.dist.sum(torch.tensor(float(batch.usable))).item())

    def backward(self, micro: list[MicroBatch], valid: int) -> torch.Tensor:
        """Forward and backward of every micro-batch; returns this rank's share of the mean
        loss over the global batch's usable samples (a device tensor)."""
        total = torch.zeros((), device=self.device)
        for m, batch in enumerate(micro):
            with self._sync_gradients(m == len(micro) - 1):
                weighted = (self.per_sample_loss(batch) * batch.weight.to(self.device)).sum()
                # DDP and FSDP average gradients over ranks; scaling by the world size turns
                # that average into the mean over every usable sample of the global batch.
                (weighted * (self.dist.world / valid)).backward()
                total += weighted.detach() / valid
        return total

    def clip_gradients(self) -> torch.Tensor:
        """Clip the global gradient norm to ``train.grad_clip``; returns the norm before."""
        clip = self.cfg.train.grad_clip or float("inf")
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        return (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).detach()

    def per_sample_loss(self, batch: MicroBatch) -> torch.Tensor:
        """Rectified-flow loss of each sample of ``batch`` (forward only), shape (B,)."""
        if batch.text is not None:
            text, mask = batch.text.to(self.device), batch.text_mask.to(self.device)
        else:
            text, mask = self.text.encode(batch.captions)
        x, t, noise = (
            v.to(self.device, non_blocking=True) for v in (batch.x, batch.t, batch.noise)
        )
        given = None if batch.given is None else batch.given.to(self.device)
        with autocast(self.device, self.amp):
            if batch.t_end is None:
                return flow_loss_per_sample(
                    lambda xt, tt: self.model(xt, tt, text, mask), x, noise, t, given
                )
            return self.student_loss(batch, text, mask, x, noise, t, given)

    def student_loss(
        self,
        batch: MicroBatch,
        text: torch.Tensor,
        mask: torch.Tensor | None,
        end: torch.Tensor,
        start: torch.Tensor,
        t: torch.Tensor,
        given: torch.Tensor,
    ) -> torch.Tensor:
        """A few-step student's loss on teacher paths (``distill.method``), shape (B,):
        'average' regresses the average velocity of the step from t to t_end between the
        path's states, with the step size as input; 'reflow' the straight line's velocity."""
        t_end = batch.t_end.to(self.device)
        if self.cfg.distill.method == "average":
            step = t - t_end

            def velocity(xt: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
                return self.model(xt, tt, text, mask, step=step)

            return average_velocity_loss(velocity, start, end, t, t_end, given)
        frames = t[:, None].masked_fill(given, 0.0)  # given frames stay data (t = 0)
        return flow_loss_per_sample(
            lambda xt, tt: self.model(xt, tt, text, mask), end, start, frames, given
        )

    def _sync_gradients(self, last: bool) -> Any:
        """Reduce gradients across ranks only on the last micro-batch of a step."""
        if isinstance(self.model, nn.parallel.DistributedDataParallel) and not last:
            return self.model.no_sync()
        if self.dist.mode == "fsdp":
            self.model.set_requires_gradient_sync(last)
        return nullcontext()

    def settle(self) -> None:
        """Read the device-side flags of the steps since the last read (one host sync) and give
        back the steps whose update was skipped; raises when too many were in a row."""
        advanced = self.step
        settled = self.guard.read(self.step)
        self.step = settled.step
        rewind(self.scheduler, advanced - settled.step)
        self.interval.updates += settled.updates
        if settled.abort:
            raise settled.abort

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:meth:`update`, then :meth:`settle`: (this rank's share of the mean loss, global grad
        norm), or None when no update was made. For scripts and tests; :meth:`run` settles only
        at its host events."""
        before = self.step
        self.update()
        last = self.guard.pending[-1]
        self.settle()
        if last is None or self.step == before:
            return None
        return last.loss, last.grad_norm

    def due(self) -> bool:
        """Whether the current step has a host event: metrics row, validation, sample or
        checkpoint."""
        t, s = self.cfg.train, self.step
        every = [t.log_every, t.val_every, t.sample_every, t.ckpt_every]
        return s == t.steps or any(n and s % n == 0 for n in every)

    def run(self) -> dict[str, Any]:
        """Train to the configured number of steps; returns the last metrics row."""
        t, d = self.cfg.train, self.dist
        logger = start_run(self.run_dir, self.cfg.to_json(), self.step) if d.main else None
        note = precision_note(t.precision, self.device)
        if self.progress:
            print(f"univid: {self.plan.describe()}; {note}", file=sys.stderr)
        if d.main:
            session = {
                "step": self.step,
                "precision": precision_name(self.amp),
                "note": note,
                "device": self.device.type,
                "world": d.world,
                "cpu_flags": cpu_flags() if self.device.type == "cpu" else [],
                "torch": torch.__version__,
            }
            append_log(self.run_dir, SESSIONS_LOG, [json.dumps(session)])
        bar = tqdm(total=t.steps, initial=self.step, desc="train", disable=not self.progress)
        handled, row = self.step, {}
        try:
            while self.step < t.steps:
                self.update()
                bar.update()
                if self.due():
                    self.settle()
                    bar.n = self.step
                if self.due() and self.step > handled and not self.guard.pending:
                    handled = self.step
                    if self.step % t.log_every == 0 or self.step == t.steps or self._validate():
                        row = self.metrics_row()
                        if logger is not None:
                            logger.log(row)
                        bar.set_postfix(loss=f"{row['loss']:.4f}")
                    crash_point("step", self.step)
                    # The checkpoint first: samples are extras, and must never cost trained steps.
                    if self.step % t.ckpt_every == 0 or self.step == t.steps:
                        self.save()
                    if t.sample_every and self.step % t.sample_every == 0:
                        self.extra(
                            "samples",
                            lambda: self.previews.write_samples(self.ema, self.run_dir, self.step),
                        )
                else:
                    crash_point("step", self.step)
        finally:
            # An interrupt may land inside an optimizer step, so only the periodic
            # checkpoints (always consistent) are trusted; nothing is saved here.
            self.close()
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

    def close(self) -> None:
        """Stop the background batch builder."""
        if self.batches is not None:
            self.batches.close()
            self.batches = None

    def _validate(self) -> bool:
        v, s = self.cfg.train.val_every, self.step
        return bool(v) and (s % v == 0 or s == self.cfg.train.steps)

    def metrics_row(self) -> dict[str, float]:
        """The metrics row of the steps since the last one (validation losses when due)."""
        row = self.interval.row(
            self.dist,
            step=self.step,
            lr=self.scheduler.get_last_lr()[0],
            samples=self.samples_seen,
            skipped=self.skipped,
            nonfinite=self.nonfinite,
        )
        if self._validate() and (self.dist.main or self.dist.mode == "fsdp"):
            losses = self.extra(
                "validation", lambda: self.previews.validation_losses(self.net, self.ema, self.amp)
            )
            row.update(losses or {})
        return row

    def extra(self, name: str, work: Callable[[], Any]) -> Any:
        """Run ``work``, an extra of a step (validation, samples); when it fails (a bad prompt,
        out of memory, a full disk), skip it, log it to extras.log, say so on stderr the first
        time, and go on: an extra must never cost trained steps. Returns None when skipped.

        (It runs before the step's checkpoint only when its result is part of the step's
        metrics row, which must be logged before the checkpoint that covers it.)"""
        try:
            return work()
        except (UnividError, RuntimeError, MemoryError, OSError) as exc:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            why = " ".join(str(exc).split())[:500] or type(exc).__name__
            line = f"step {self.step} rank {self.dist.rank}: {name} skipped: {why}"
            append_log(self.run_dir, EXTRAS_LOG, [line])
            if self.dist.main and name not in self.failed_extras:
                tqdm.write(  # on a line of its own, above the progress bar
                    f"univid: {line}; training goes on (further failures only in "
                    f"{self.run_dir / EXTRAS_LOG})",
                    file=sys.stderr,
                )
            self.failed_extras.add(name)
            return None

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
