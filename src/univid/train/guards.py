"""Guards of the training loop, without a host sync per step.

- **Non-finite updates.** A NaN/inf loss or gradient must change nothing. Whether a step was
  finite is known on the device only, so :class:`UpdateGuard` copies the weights and the
  optimizer's moments before the update and puts them back, on the device, where the step was
  not finite (``torch.where``; a finite step keeps its values bit for bit). The EMA update is
  weighted by the same flag. The host learns about the step when it next reads the flags — at
  the logging interval, or before a checkpoint, sample or validation — and then counts it, logs
  it with its batch, gives back its step number, LR-schedule step and optimizer step count,
  and stops the run after ``train.max_nonfinite`` in a row. Between a skipped step and that
  read, the following steps used the LR, Adam bias correction and EMA decay one step ahead.
- **Gradient-norm spikes** are judged from the same read, step by step in order.
- **Too many bad samples**: usable-sample counts are host numbers; the check is immediate.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from univid.errors import TrainingAborted
from univid.parallel import Dist, local
from univid.train.checkpoint import latest_checkpoint
from univid.train.metrics import append_log


@dataclass
class Settled:
    """What a read of the flags found."""

    step: int  # the step counter without the skipped updates
    updates: int  # finite updates among the pending steps
    abort: TrainingAborted | None  # too many non-finite steps in a row


@dataclass
class Pending:
    """An update the host has not read back yet."""

    ok: torch.Tensor  # () bool on the device: the update was finite on every rank
    loss: torch.Tensor  # () this rank's share of the global mean loss
    grad_norm: torch.Tensor  # () global gradient norm
    indices: list[int]  # this rank's dataset indices, for the anomaly log


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create Adam's state (zero moments, step 0) now rather than at the first step, exactly as
    the first step would, so that the guard can put it back if the first update is skipped."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not optimizer.state[p]:
                optimizer.state[p] = {
                    "step": torch.tensor(0.0, dtype=torch.get_default_dtype()),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }


class UpdateGuard:
    """Skips non-finite updates on the device and reports them when the host reads the flags."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dist: Dist,
        run_dir: Path,
        max_nonfinite: int,
        spike_factor: float,
    ) -> None:
        self.dist, self.run_dir = dist, run_dir
        self.max_nonfinite, self.spike_factor = max_nonfinite, spike_factor
        self.optimizer = optimizer
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.saved: list[torch.Tensor] = []
        self.pending: list[Pending | None] = []  # None: a step of bad samples only (no update)
        self.nonfinite = 0  # steps skipped for a NaN/inf loss or gradient
        self.nonfinite_run = 0  # ... of them in a row, up to the last read
        self.gnorm_mean: float | None = None  # running mean of the gradient norm
        self.good_steps = 0  # updates since start or resume (spikes are judged after 10)
        if max_nonfinite:
            init_optimizer_state(optimizer)

    @contextlib.contextmanager
    def protect(self, loss_share: torch.Tensor, grad_norm: torch.Tensor) -> Iterator[torch.Tensor]:
        """Around an optimizer update: yields ``ok``, a () bool on the device (every rank's
        loss and the global gradient norm are finite; always true with the guard off), and
        puts back what the update wrote where it is false."""
        if not self.max_nonfinite:
            yield torch.ones((), dtype=torch.bool, device=grad_norm.device)
            return
        ok = self.finite(loss_share, grad_norm)
        self._save()
        yield ok
        self._restore(ok)

    def _tensors(self) -> list[torch.Tensor]:
        """What an update writes: weights and Adam's two moments (local shards)."""
        state = self.optimizer.state
        moments = [state[p][k] for p in self.params for k in ("exp_avg", "exp_avg_sq")]
        return [local(t) for t in (*self.params, *moments)]

    def finite(self, loss_share: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """() bool on the device: every rank's loss and the global gradient norm are finite."""
        bad = torch.stack([~torch.isfinite(loss_share), ~torch.isfinite(grad_norm)]).float()
        return self.dist.sum(bad).sum() == 0

    @torch.no_grad()
    def _save(self) -> None:
        """Copy what the update will write (into buffers kept from step to step)."""
        tensors = self._tensors()
        if not self.saved:
            self.saved = [torch.empty_like(t) for t in tensors]
        torch._foreach_copy_(self.saved, tensors)

    @torch.no_grad()
    def _restore(self, ok: torch.Tensor) -> None:
        """Put the copies back where the update was not finite; a finite one stays as it is."""
        for tensor, saved in zip(self._tensors(), self.saved):
            torch.where(ok, tensor, saved, out=tensor)

    def record(self, entry: Pending | None) -> None:
        self.pending.append(entry)

    def read(self, step: int) -> Settled:
        """Read the flags of the pending steps (one host sync) and settle them in order.

        ``step`` is the step counter as the loop advanced it, counting every pending update.
        Settling stops at the ``max_nonfinite``-th non-finite update in a row."""
        pending, self.pending = self.pending, []
        updates = [p for p in pending if p is not None]
        rows = iter([])
        if updates:
            flags = [torch.stack([p.ok.float(), p.loss, p.grad_norm]) for p in updates]
            rows = iter(torch.stack(flags).tolist())
        true_step, finite = step - len(pending), 0
        for entry in pending:
            if entry is None:  # no usable sample: the step counts, nothing was updated
                true_step += 1
                continue
            ok, loss, norm = next(rows)
            if ok:
                self.nonfinite_run = 0
                if self.spike_factor:
                    self.watch_spikes(norm, true_step + 1)
                true_step += 1
                finite += 1
                continue
            abort = self._nonfinite(true_step + 1, loss, norm, entry.indices)
            self._give_back(1)
            if abort is not None:
                return Settled(true_step, finite, abort)
        return Settled(true_step, finite, None)

    def _nonfinite(
        self, step: int, loss: float, norm: float, indices: list[int]
    ) -> TrainingAborted | None:
        self.nonfinite += 1
        self.nonfinite_run += 1
        self.log_anomaly(
            f"step {step}: non-finite loss or gradient (loss share {loss:.4g}, grad norm "
            f"{norm:.4g}); update skipped; rank {self.dist.rank} batch indices {indices}",
            every_rank=True,
        )
        if self.nonfinite_run >= self.max_nonfinite:
            last = latest_checkpoint(self.run_dir)
            return TrainingAborted(
                f"{self.nonfinite_run} steps in a row had a non-finite loss or gradient (the last "
                f"at step {step}; train.max_nonfinite={self.max_nonfinite}); the last good "
                f"checkpoint is {last or 'none: no checkpoint was written yet'}. Lower train.lr, "
                f"raise train.warmup or check the batches listed in "
                f"{self.run_dir / 'anomalies.log'}"
            )
        return None

    def _give_back(self, skipped: int) -> None:
        """Take back the optimizer's step count of ``skipped`` updates that were dropped."""
        for state in self.optimizer.state.values():
            if "step" in state:
                state["step"] -= skipped

    def watch_spikes(self, grad_norm: float, step: int) -> None:
        """Log a gradient norm far above its running mean (judged after 10 updates)."""
        mean, factor = self.gnorm_mean, self.spike_factor
        if mean is not None and self.good_steps >= 10 and grad_norm > factor * mean:
            self.log_anomaly(
                f"step {step}: gradient-norm spike {grad_norm:.4g}, "
                f"{grad_norm / mean:.1f}x its running mean {mean:.4g}"
            )
        self.gnorm_mean = grad_norm if mean is None else 0.9 * mean + 0.1 * grad_norm
        self.good_steps += 1

    def log_anomaly(self, message: str, every_rank: bool = False) -> None:
        """A line in anomalies.log (from each rank, or from rank 0) and on rank 0's stderr."""
        if not (every_rank or self.dist.main):
            return
        append_log(self.run_dir, "anomalies.log", [message])
        if self.dist.main:
            tqdm.write(f"univid: {message}", file=sys.stderr)


def check_bad_fraction(skipped: int, seen: int, batches: int, limit: float, run_dir: Path) -> None:
    """Stop when more than ``limit`` of the samples were bad (judged once 10 global batches were
    read, so a few bad clips early on do not stop a run)."""
    if batches >= 10 and skipped > limit * seen:
        raise TrainingAborted(
            f"{skipped} of {seen} samples were bad, more than data.max_bad_fraction={limit}; "
            f"reasons in {run_dir / 'skipped.log'}"
        )
