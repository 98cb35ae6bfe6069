"""Batch assembly: which samples a step trains on, with their random draws, built ahead of time.

Every random draw of a training sample (which clip, caption dropout, t, noise) is a pure
function of (seed, stream position), and the samplers of :mod:`univid.data.sampler` and
:mod:`univid.data.buckets` say which positions each rank takes. So the batches of the next steps
can be built on a background thread while the current step computes: what lands where does not
depend on when it is built, and a resumed run sees exactly the samples an uninterrupted run
would have seen.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from univid.config import Config, replace
from univid.config.sections import MODE_FRAMES, MODES, mix
from univid.data import BadSample
from univid.data.buckets import BucketSampler, bucket_name
from univid.data.cache import CacheDataset, CachedClip
from univid.data.sampler import StreamSampler
from univid.data.shapes import BounceWorld, ShapesWorld
from univid.errors import ConfigError
from univid.flow import logit_normal, uniform
from univid.parallel import Dist
from univid.text import pad_states
from univid.train.paths import TeacherPath


@dataclass
class MicroBatch:
    """One rank's share of one micro-batch, with its random draws."""

    x: torch.Tensor  # (B, C, T, H, W) in [-1, 1] or latents; zeros where a sample was bad
    captions: list[str]
    text: torch.Tensor | None  # cached caption states (B, L, D), or None: encode the captions
    text_mask: torch.Tensor | None  # (B, L) True on real tokens
    t: torch.Tensor  # (B,), or (B, T') one per latent frame when the mix has other modes
    given: torch.Tensor | None  # (B, T') bool, True on frames given as conditioning; or None
    noise: torch.Tensor  # like x
    weight: torch.Tensor  # (B,) 1 for a usable sample, 0 for a skipped one
    skipped: list[tuple[int, str]]  # (dataset index, reason)
    indices: list[int]  # dataset index of every sample
    # Distillation (teacher paths): t is each student step's start (B,), t_end its end (B,);
    # noise holds the state at t, x the state at t_end ('reflow': the noise and the video).
    t_end: torch.Tensor | None = None


@dataclass
class GlobalBatch:
    """This rank's micro-batches of one global batch, and where the stream stands after it."""

    micro: list[MicroBatch]
    size: int  # samples in the global batch, over all ranks
    samples_seen: int  # stream positions consumed once this batch is used
    batches_seen: int

    @property
    def usable(self) -> int:
        """Usable samples of this rank (host arithmetic: no tensor is read)."""
        return sum(len(b.indices) - len(b.skipped) for b in self.micro)

    @property
    def skipped(self) -> list[tuple[int, str]]:
        return [s for b in self.micro for s in b.skipped]

    @property
    def indices(self) -> list[int]:
        return [i for b in self.micro for i in b.indices]


class BatchPlan:
    """The run's sample stream cut into global batches, micro-batches and ranks.

    ``dataset`` is indexable, returns ``(video uint8 (T, H, W, 3), caption, ...)`` or a
    :class:`univid.data.cache.CachedClip`, and raises :class:`BadSample` for an item it cannot
    use; it may define ``__len__`` (otherwise it is unbounded), ``buckets`` (bucket -> indices:
    each batch then comes from one bucket) and ``placeholder(i)`` (what a bad item's place in a
    batch holds)."""

    def __init__(self, cfg: Config, dist: Dist, dataset: Any) -> None:
        self.cfg, self.dist, self.dataset = cfg, dist, dataset
        t = cfg.train
        self.share = dist.world * t.grad_accum  # micro-batches per global batch
        self.mix = list(mix(cfg).values())
        self.per_frame = self.mix[0] < 1.0  # any mode besides text to video
        self.distill = cfg.distill.method  # '' or the student's objective (teacher paths)
        self.global_batch = t.batch_size * self.share
        buckets = getattr(dataset, "buckets", None)
        self.sampler: StreamSampler | BucketSampler
        self.bucket_batch: dict[tuple[int, int, int], int] = {}
        if buckets:
            self.bucket_batch = {b: self.per_rank_batch(b) for b in buckets}
            sizes = {b: n * self.share for b, n in self.bucket_batch.items()}
            self.sampler = BucketSampler(buckets, sizes, seed=t.seed)
        else:
            size = len(dataset) if hasattr(dataset, "__len__") else None
            self.sampler = StreamSampler(size, seed=t.seed)

    def per_rank_batch(self, bucket: tuple[int, int, int]) -> int:
        """Clips per rank and micro-batch from ``bucket``: ``train.batch_size``, or as many as
        ``data.tokens_per_batch`` video tokens allow (at least 1)."""
        budget = self.cfg.data.tokens_per_batch
        if not budget:
            return self.cfg.train.batch_size
        shape = self.dataset.latent_shapes[bucket][1:]
        tokens = math.prod(s // p for s, p in zip(shape, self.cfg.model.patch))
        return max(1, budget // tokens)

    def describe(self) -> str:
        """The batch layout on one line, for the start of a run."""
        d, t = self.dist, self.cfg.train
        layout = (
            f"{d.world} rank(s) x {t.grad_accum} accumulation step(s)"
            f"{f', parallel.mode={d.mode}' if d.mode != 'none' else ''}"
        )
        if self.bucket_batch:
            sizes = ", ".join(f"{bucket_name(b)}: {n}" for b, n in self.bucket_batch.items())
            return f"global batch per bucket = ({sizes}) per rank x {layout}"
        return f"global batch {self.global_batch} = {t.batch_size} per rank x {layout}"

    def global_indices(self, samples_seen: int, batches_seen: int) -> list[int]:
        """Dataset indices of the next global batch (every rank computes the same list)."""
        if isinstance(self.sampler, BucketSampler):
            return self.sampler.batch(batches_seen)
        return self.sampler.indices(range(samples_seen, samples_seen + self.global_batch))

    def batch(self, samples_seen: int, batches_seen: int) -> GlobalBatch:
        """This rank's micro-batches of the global batch that starts the stream's rest."""
        indices = self.global_indices(samples_seen, batches_seen)
        micro = [
            self.micro_batch(indices, m, samples_seen) for m in range(self.cfg.train.grad_accum)
        ]
        return GlobalBatch(micro, len(indices), samples_seen + len(indices), batches_seen + 1)

    def micro_batch(self, indices: list[int], micro: int, samples_seen: int) -> MicroBatch:
        """This rank's part of micro-batch ``micro`` of the global batch ``indices``; ranks own
        contiguous slices, and sample j's random draws depend only on (seed, stream position)."""
        per = len(indices) // self.share
        first = (self.dist.rank * self.cfg.train.grad_accum + micro) * per
        parts = [self.sample(indices[j], samples_seen + j) for j in range(first, first + per)]
        xs, captions, states, times, givens, noises, weight, skipped, ends = zip(*parts)
        text = mask = None
        if states[0] is not None:
            t = self.cfg.text
            length = t.max_length if t.padding == "max_length" else 0
            text, mask = pad_states(list(states), self.dataset.text_dim, length)
        return MicroBatch(
            x=_stack(xs),
            captions=list(captions),
            text=text,
            text_mask=mask,
            t=torch.stack(times) if self.per_frame and not self.distill else torch.cat(times),
            given=torch.stack(givens) if self.per_frame or self.distill else None,
            noise=_stack(noises),
            weight=torch.tensor(weight),
            skipped=[s for s in skipped if s is not None],
            indices=[indices[j] for j in range(first, first + per)],
            t_end=torch.cat(ends) if self.distill else None,
        )

    def sample(self, index: int, position: int) -> tuple:
        """(x, caption, text states or None, t, given, noise, weight, skip reason or None,
        t_end or None) of one stream position."""
        cfg = self.cfg
        seed = cfg.train.seed
        skipped = None
        try:
            item, weight = self.dataset[index], 1.0
        except BadSample as exc:
            item, weight = self.placeholder(index), 0.0
            skipped = (index, str(exc) or type(exc).__name__)
        drop = np.random.default_rng([seed, position, 1]).random() < cfg.data.caption_dropout
        gen = torch.Generator().manual_seed(seed * 1_000_003 + position)
        if isinstance(item, TeacherPath):
            start, end, t, t_end = self.student_step(item, position, gen)
            caption = "" if drop else item.caption
            return end, caption, None, t, item.given, start, weight, skipped, t_end
        state = None
        if isinstance(item, CachedClip):
            x, caption = item.latents, item.caption
            state = self.dataset.null_text if drop else item.text
        else:
            video, caption = item[:2]
            x = torch.from_numpy(np.ascontiguousarray(video)).permute(3, 0, 1, 2)
            x = x.float() / 127.5 - 1.0
        frames = x.shape[1] // cfg.model.patch[0]
        if cfg.model.chunk:  # a window's start in its clip, where the dataset says (4th item)
            opens = state is not None or len(item) < 4 or item[3] == 0
            t, given = self.stream_times(frames, opens, position, gen)
        else:
            t, given = self.times(frames, position, gen)
        noise = torch.randn(x.shape, generator=gen)
        return x, "" if drop else caption, state, t, given, noise, weight, skipped, None

    def student_step(
        self, path: TeacherPath, position: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(state at t, state at t_end, t (1,), t_end (1,)) of a student's step on a teacher
        path. 'average': one of the steps of a student of n = 1, 2, 4, ... max_steps steps
        (n and the step uniform), between the path's states at its ends. 'reflow': the straight
        line from the noise (t = 1) to the video (t = 0), at t uniform in [0, 1) half the time
        and at a student's step start k / max_steps (k = 1 .. max_steps) otherwise."""
        states = path.states  # (1 + K, C, T, H, W), entry k at t = 1 - k / K
        K = states.shape[0] - 1
        rng = np.random.default_rng([self.cfg.train.seed, position, 3])
        if self.distill == "reflow":
            if rng.random() < 0.5:
                t = uniform(1, generator=gen)
            else:
                t = torch.tensor([int(rng.integers(1, K + 1)) / K])
            return states[0], states[-1], t, torch.zeros(1)
        counts = self.cfg.distill.step_counts  # 1, 2, 4, ... K
        n = counts[int(rng.integers(0, len(counts)))]
        j = int(rng.integers(0, n))
        a, b = j * K // n, (j + 1) * K // n
        return states[a], states[b], torch.tensor([1 - a / K]), torch.tensor([1 - b / K])

    def times(
        self, frames: int, position: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A sample's flow time and given frames, drawn from its conditioning mode.

        Text-to-video-only runs draw one t (1,) and no mask, as before the mix existed. Otherwise
        the mode is drawn from ``flow.mix_*`` (numpy stream [seed, position, 2]) and t is one
        per latent frame (frames,): 'per_frame' draws each; the others draw one t for every
        generated frame and put the given frames ('i2v': the first, 'extend': the first k,
        'interpolate': the first and last) at t = 0.
        """
        f = self.cfg.flow
        if not self.per_frame:
            return self.draw_time(1, gen), None
        need = max((MODE_FRAMES[m], m) for m, w in zip(MODES, self.mix) if w > 0)
        if frames < need[0]:
            raise ConfigError(
                f"flow.mix_{need[1]}={getattr(f, f'mix_{need[1]}'):g} needs {need[0]} or more "
                f"latent frames; a clip has {frames} (frames / model.patch[0])"
            )
        rng = np.random.default_rng([self.cfg.train.seed, position, 2])
        mode = MODES[rng.choice(len(MODES), p=self.mix)]
        t = self.draw_time(frames if mode == "per_frame" else 1, gen).expand(frames).clone()
        given = torch.zeros(frames, dtype=torch.bool)
        if mode == "i2v":
            given[0] = True
        elif mode == "extend":
            given[: int(rng.integers(2, frames))] = True
        elif mode == "interpolate":
            given[[0, -1]] = True
        return t.masked_fill(given, 0.0), given

    def stream_times(
        self, frames: int, opens: bool, position: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A streaming sample's per-frame times and frames without loss (``given``): k chunks
        of context, then the chunk to generate at one drawn t, as in generation. A window
        that ``opens`` its clip has k uniform in 0 .. (anchor + window) / chunk (the first
        chunks of a video see less context); a later one the anchor and the whole window.
        The context sits at a time uniform in [0, stream.context_noise]; chunks after the
        generated one (when k is short of the window) are pure noise without loss, which
        block-causal attention hides from it."""
        chunk, s = self.cfg.model.chunk, self.cfg.stream
        rng = np.random.default_rng([self.cfg.train.seed, position, 2])
        full = (s.anchor + s.window) // chunk
        k = int(rng.integers(0, full + 1)) if opens else full
        context, end = k * chunk, (k + 1) * chunk
        t = self.draw_time(1, gen).expand(frames).clone()
        t[:context] = float(rng.uniform(0.0, s.context_noise))
        t[end:] = 1.0
        given = torch.ones(frames, dtype=torch.bool)
        given[context:end] = False
        return t, given

    def draw_time(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """n flow times from the configured distribution."""
        f = self.cfg.flow
        if f.time_sampling == "uniform":
            return uniform(n, generator=gen)
        return logit_normal(n, f.logit_mean, f.logit_std, gen)

    def placeholder(self, index: int) -> Any:
        """What a bad item's place in a batch holds (its weight is 0)."""
        if hasattr(self.dataset, "placeholder"):
            return self.dataset.placeholder(index)
        d = self.cfg.data
        return np.zeros((d.frames, d.height, d.width, self.cfg.model.in_channels), np.uint8), ""


def _stack(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``torch.stack`` one sample at a time: each copy is below the size at which torch starts
    its intra-op thread pool, so the builder thread never starts a second pool that would fight
    the training step's for the cores."""
    out = torch.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].dtype)
    for row, tensor in zip(out, tensors):
        row.copy_(tensor)
    return out


def config_for_cache(cfg: Config, dataset: CacheDataset) -> tuple[Config, str]:
    """``cfg`` with what the cache decides filled in: latent channels, text encoder and width,
    autoencoder, frame rate, and the clip shape generated by samples (the most common bucket).
    Fails with one line when a bucket's latents do not divide into the model's patches."""
    index = dataset.index
    text, settings = index["text_encoder"], index["settings"]
    counts = {b: len(ix) for b, ix in dataset.buckets.items()}
    bucket = max(counts, key=lambda b: (b[0] > 1, counts[b], b))
    patch = cfg.model.patch
    for b, latent in sorted(dataset.latent_shapes.items()):
        if any(size % p for size, p in zip(latent[1:], patch)):
            raise ConfigError(
                f"bucket {bucket_name(b)} of the cache has latents of "
                f"{bucket_name(latent[1:])} (frames x height x width), which model.patch="
                f"{','.join(map(str, patch))} does not divide; choose a patch that divides "
                "every bucket's latent shape, or prepare other buckets"
            )
    new = replace(
        cfg,
        model=replace(cfg.model, in_channels=dataset.channels, text_dim=dataset.text_dim),
        text=replace(
            cfg.text,
            encoder=text["source"],
            max_length=int(text["max_length"]),
            padding=text["padding"],
        ),
        data=replace(
            cfg.data,
            autoencoder=index["autoencoder"]["spec"],
            frames=bucket[0],
            height=bucket[1],
            width=bucket[2],
            fps=max(1, round(settings["fps"])),
        ),
    )
    note = (
        f"training on the cache {dataset.folder}: {dataset.summary()}; autoencoder "
        f"{new.data.autoencoder}, {dataset.channels} latent channels; text encoder "
        f"{new.text.encoder} (width {dataset.text_dim}); samples are {bucket_name(bucket)}"
    )
    return new, note


def open_dataset(cfg: Config, dataset: Any = None) -> tuple[Config, Any, str | None]:
    """The run's dataset and the config that goes with it, opened once: ``dataset`` as given,
    else the cache of ``data.cache`` (which then decides the channels, text encoder,
    autoencoder and sample shape: the returned config says so, and so does the note), else
    the config's shapes world."""
    if dataset is None and cfg.data.cache:
        dataset = CacheDataset(cfg.data.cache)
        cfg, note = config_for_cache(cfg, dataset)
        return cfg, dataset, note
    if dataset is None and cfg.data.dataset == "bounce":
        d = cfg.data
        share = cfg.stream.start_share
        anchor = cfg.stream.anchor * cfg.model.patch[0]
        dataset = BounceWorld(
            d.frames, d.height, d.width, cfg.train.seed, start_share=share, anchor=anchor
        )
    if dataset is None:
        d = cfg.data
        dataset = ShapesWorld(
            d.frames, d.height, d.width, seed=cfg.train.seed, novel_fraction=d.novel_fraction
        )
    return cfg, dataset, None


class Batches:
    """The global batches from a stream position on, in stream order: built in the step
    (``ahead=False``) or ahead on a background thread (``ahead=True``), which overlaps batch
    assembly (decoding, rendering, random draws) with a step that leaves the host idle, as on
    a GPU. On a CPU the step already uses every core, and building ahead measured slower (the
    thread competes for the cores and the GIL). Either way each batch holds the same samples.
    An exception in the thread reaches the consumer at the batch it belongs to."""

    def __init__(
        self, plan: BatchPlan, samples_seen: int, batches_seen: int, ahead: bool, depth: int = 2
    ) -> None:
        self.plan, self.position = plan, (samples_seen, batches_seen)
        self.pin = plan.dist.device.type == "cuda"
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = None
        if ahead:
            self.thread = threading.Thread(target=self._fill, daemon=True, name="batches")
            self.thread.start()

    def _build(self) -> GlobalBatch:
        batch = self.plan.batch(*self.position)
        self.position = batch.samples_seen, batch.batches_seen
        if self.pin:  # page-locked, so the copy to the GPU can overlap with compute
            for b in batch.micro:
                b.x, b.noise = b.x.pin_memory(), b.noise.pin_memory()
        return batch

    def _fill(self) -> None:
        while not self.stop.is_set():
            try:
                batch = self._build()
            except BaseException as exc:  # handed to the consumer, raised there
                self._put(exc)
                return
            self._put(batch)

    def _put(self, item: object) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[GlobalBatch]:
        return self

    def __next__(self) -> GlobalBatch:
        if self.thread is None:
            return self._build()
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the thread (it finishes the batch it is building) and drop what it built."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
