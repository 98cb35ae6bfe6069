"""Text -> video: ``Pipeline.from_pretrained(NAME_OR_DIR)(prompt, ...)``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from univid import speed
from univid import step_cache as caching
from univid.autoencoder import Autoencoder, load_autoencoder
from univid.build import DEFAULT_MODEL, FEW_STEP_STUDENT, load_model_dir, resolve_model_dir
from univid.config import Config, load_config_file
from univid.config.sections import RANGES, mix
from univid.device import autocast, autocast_dtype, pick_device
from univid.errors import InputError
from univid.flow import SOLVERS, Given, guided, ode_sample
from univid.given import frames_from, to_given
from univid.limits import LORA_SCALE, NUM_VIDEOS, SEED, STREAM_FRAMES
from univid.memory import check_fits, generation
from univid.step_cache import StepCache
from univid.stream import StreamSettings, context_at, sample_chunk, stream_latents
from univid.text import TextEncoder
from univid.text.clean import clean_text
from univid.video import to_uint8


def check_prompt(prompt: str) -> str:
    """The prompt as the model sees it (:func:`univid.text.clean.clean_text`: whitespace and
    invisible format characters normalised), or :class:`InputError` if it is not usable text."""
    return clean_text(prompt, "prompt")


def student_steps(config: Config) -> tuple[int, ...] | None:
    """The step counts a few-step student samples with (``distill.method=average``: 1, 2, 4, ...
    up to ``distill.max_steps``); None when any count will do (a teacher, or a reflow student,
    which is a flow)."""
    return config.distill.step_counts if config.distill.method == "average" else None


def default_model(steps: int | None, other_settings: bool) -> tuple[str, str | None]:
    """The model `univid generate` uses without ``--model``, and a line saying why when it is
    not the default: the bundled teacher's few-step student when ``steps`` is one of the
    student's counts and nothing else about sampling (guidance, solver, shift, step cache,
    adapter) was asked for, since those are the teacher's."""
    student = FEW_STEP_STUDENT[DEFAULT_MODEL]
    allowed = student_steps(load_config_file(resolve_model_dir(student) / "config.json"))
    if steps is None or other_settings or (allowed is not None and steps not in allowed):
        return DEFAULT_MODEL, None
    note = (
        f"--steps {steps}: using {student}, the few-step student of {DEFAULT_MODEL} (guidance "
        f"built in); --model {DEFAULT_MODEL} for the teacher itself"
    )
    return student, note


def check_student(
    config: Config, steps: int, guidance: float, solver: str, shift: float, step_cache: float
) -> None:
    """One line (:class:`InputError`) for sampler settings a few-step student cannot take: a
    student has its teacher's guidance built in (guidance 1), and an 'average' student learned
    its step counts on an even grid, with Euler steps."""
    d = config.distill
    if not d.method:
        return
    if guidance != 1.0:
        raise InputError(
            f"this student (distill.method={d.method}) has its teacher's guidance {d.guidance:g} "
            f"built in: sample it with guidance 1, not {guidance:g}"
        )
    allowed = student_steps(config)
    if allowed is None:
        return
    counts = ", ".join(map(str, allowed))
    if steps not in allowed:
        raise InputError(
            f"this student (distill.method=average) samples with {counts} steps, not {steps}"
        )
    if solver != "euler" or shift != 1.0 or step_cache:
        raise InputError(
            f"this student (distill.method=average) learned Euler steps on an even grid: use "
            f"solver euler, shift 1 and no step cache (got {solver}, shift {shift:g}, step "
            f"cache {step_cache:g})"
        )


class Pipeline:
    """A trained velocity model, its text encoder, autoencoder and config, ready to generate
    videos. The autoencoder (``data.autoencoder`` of the config unless given) turns the sampled
    latents into pixels; 'pixel' models sample pixels directly.

    Speed settings, attributes that may be changed between calls: ``attention`` (an
    SDPA kernel name or 'naive', see :func:`univid.speed.attention`) and ``precision`` ('auto'
    = bf16 autocast on CUDA and on CPUs with bf16 matrix units, see
    :func:`univid.device.bf16_units`; 'fp32' or 'bf16'). ``from_pretrained`` can also compile
    the blocks and quantise the weights.
    """

    attention: str = "auto"
    precision: str = "auto"

    def __init__(
        self,
        model: nn.Module,
        text_encoder: Any,
        config: Config,
        autoencoder: Autoencoder | None = None,
    ) -> None:
        self.model = model.eval()
        self.text_encoder = text_encoder
        self.config = config
        self.device = next(model.parameters()).device
        self.last_cache: StepCache | None = None
        self.autoencoder = autoencoder or load_autoencoder(config.data.autoencoder, self.device)
        if self.autoencoder.channels != config.model.in_channels:
            raise InputError(
                f"model.in_channels={config.model.in_channels} does not match the "
                f"{self.autoencoder.channels} channels of the autoencoder "
                f"{config.data.autoencoder!r}"
            )

    @classmethod
    def from_pretrained(
        cls,
        name_or_dir: str | Path = "shapes-tiny",
        device: str = "auto",
        compile: bool = False,
        quantization: str = "none",
    ) -> Pipeline:
        """Load a bundled model by name or a model / training-run folder.

        ``compile`` compiles each block with ``torch.compile`` (cached on disk, see
        :func:`univid.speed.use_compile_cache`); ``quantization`` is 'none', 'int8-weight' or
        'int8-dynamic' (torchao).
        """
        cfg, model = load_model_dir(name_or_dir)
        dev = pick_device(device)
        text = TextEncoder(cfg.text.encoder, cfg.text.max_length, dev, padding=cfg.text.padding)
        model = speed.quantize(model.to(dev), quantization)
        speed.prepare_blocks(model, checkpointing=False, compile_blocks=compile)
        pipe = cls(model, text, cfg)
        pipe.quantization = quantization
        return pipe

    quantization: str = "none"
    lora: dict | None = None  # adapter.json of the adapter on the model, with its folder

    def load_lora(self, path: str | Path, scale: float = 1.0) -> Pipeline:
        """Put the LoRA adapter of ``path`` (an adapter or fine-tuning run folder) on the model,
        unmerged, its update scaled by ``scale``; one at a time (:meth:`unload_lora` first).
        Refuses, in one line, an adapter trained on another base. Returns the pipeline."""
        from univid import lora

        LORA_SCALE.check("scale", scale)
        if self.quantization != "none":
            raise InputError(
                "a LoRA adapter cannot go on int8 weights: merge it first (univid export "
                "--merge-lora) and quantise the merged model"
            )
        meta = lora.load_adapter(self.model, path, scale)
        self.lora = {**meta, "path": str(path), "scale": scale}
        return self

    def unload_lora(self) -> None:
        """Take the adapter off: the base model as it was loaded."""
        from univid import lora

        lora.unload_adapter(self.model)
        self.lora = None

    def __call__(
        self,
        prompt: str | Sequence[str],
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        num_videos: int = 1,
        shift: float | None = None,
        progress: bool = False,
        solver: str | None = None,
        step_cache: float | None = None,
        images: Mapping[int, np.ndarray] | None = None,
        video: np.ndarray | None = None,
        keep: int | None = None,
    ) -> np.ndarray:
        """Generate uint8 video(s) of shape (T, H, W, 3).

        A single prompt with ``num_videos=1`` gives one video (T, H, W, 3); otherwise the result
        is (N, T, H, W, 3) with ``num_videos`` videos per prompt, prompt-major. Video k of a
        prompt uses seed ``seed + k``.

        Given frames (models trained with a ``flow.mix_*`` besides t2v): ``images`` maps frame
        indices to uint8 images, e.g. ``{0: first}`` (image to video) or ``{0: first, -1: last}``
        (in-between); ``video`` (T, H, W, 3) is continued from its last ``keep`` frames (default
        half the model's frames), which open the result. Images of any size are scaled and
        centre-cropped as ``univid prepare`` does; the given frames come back unchanged.
        :func:`univid.given.read_given` reads these arguments from image and video files.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise InputError("no prompt given")
        NUM_VIDEOS.check("num_videos", num_videos)
        all_prompts = [p for p in prompts for _ in range(num_videos)]
        seeds = [seed + k for _ in prompts for k in range(num_videos)]
        given = None
        if images or video is not None or keep is not None:
            data = self.config.data
            one = frames_from(data.frames, data.height, data.width, images, video, keep)
            given = [one] * len(all_prompts)
        videos = self.generate(
            all_prompts,
            seeds,
            num_steps,
            guidance_scale,
            shift,
            progress,
            solver,
            step_cache,
            given,
        )
        return videos[0] if isinstance(prompt, str) and num_videos == 1 else videos

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        shift: float | None = None,
        progress: bool = False,
        solver: str | None = None,
        step_cache: float | None = None,
        given: Sequence[dict[int, np.ndarray]] | None = None,
    ) -> np.ndarray:
        """One video per (prompt, seed) pair, in one batch: uint8 (N, T, H, W, 3).

        ``solver`` ('euler', 'heun', 'midpoint') and ``step_cache`` (threshold, 0 = off)
        default to the config's ``flow`` section; after the call ``self.last_cache`` holds
        the cache's counts (calls, skipped) when one was used. ``given`` holds per video the
        frames it is given (frame index -> uint8 (H, W, 3) at the model's size, see
        :func:`univid.given.frames_from`); they are kept fixed and returned as they are.
        """
        flow, data = self.config.flow, self.config.data
        threshold = flow.step_cache if step_cache is None else step_cache
        RANGES["flow.step_cache"].check("step_cache", threshold)
        steps, scale, solver, shift = self._sampling(
            num_steps, guidance_scale, solver, shift, threshold
        )
        if len(seeds) != len(prompts):
            raise InputError(f"{len(prompts)} prompts need as many seeds, got {len(seeds)}")
        for s in seeds:
            SEED.check("seed", s)
        prompts = [check_prompt(p) for p in prompts]
        check_fits(generation(self.config, len(prompts)), self.device, "sampling")
        latent = self.autoencoder.latent_shape(data.frames, data.height, data.width)
        shape = (self.config.model.in_channels, *latent)
        # Each video's noise comes from its own seed: a batch equals its videos made one by one.
        noise = torch.stack(
            [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
        ).to(self.device)
        text, mask = self.text_encoder.encode(list(prompts))
        null, null_mask = self.text_encoder.encode([""] * len(prompts))
        cache = StepCache(threshold) if threshold > 0 else None
        velocity = guided(self.network(steps), text, mask, null, null_mask, scale)
        fixed = self.given(given, len(prompts), latent)
        amp = autocast_dtype(self.precision, self.device)
        bar = tqdm(total=steps, desc="sampling", disable=not progress, leave=False)
        with (
            speed.attention(self.model, self.attention),
            caching.step_cache(self.model, cache),
            autocast(self.device, amp),
        ):
            x = ode_sample(velocity, noise, steps, solver, shift, lambda *_: bar.update(), fixed)
        bar.close()
        self.last_cache = cache
        # One check at the end (flow/ knows only torch): NaN or inf would be written as black.
        if not bool(torch.isfinite(x).all()):
            raise InputError(
                "sampling produced NaN or infinite values (the model's weights, guidance "
                f"{scale:g} or shift {shift:g} overflow); no video written"
            )
        videos = to_uint8(self.autoencoder.decode(x.float()))
        for video, frames in zip(videos, given or []):  # bit for bit, whatever the autoencoder
            for index, image in frames.items():
                video[index] = image
        return videos

    def stream(
        self,
        prompt: str,
        frames: int,
        seed: int = 0,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        prompt_at: Mapping[int, str] | None = None,
        progress: bool = False,
        **settings: Any,
    ) -> Iterator[np.ndarray]:
        """Yield the uint8 (H, W, 3) frames of a ``frames``-long video as they are made, chunk
        by chunk (streaming models, ``model.chunk`` > 0). ``prompt_at`` maps frame indices to
        prompts that take over from the first chunk starting there or later; other
        ``settings`` are those of :meth:`stream_batch`."""
        bar = tqdm(total=frames, desc="generating", unit="frame", disable=not progress)
        schedule = {0: [prompt], **{f: [p] for f, p in (prompt_at or {}).items()}}
        try:
            for chunk in self.stream_batch(
                schedule, [seed], frames, num_steps, guidance_scale, **settings
            ):
                yield from chunk[0]
                bar.update(len(chunk[0]))
        finally:
            bar.close()

    @torch.no_grad()
    def stream_batch(
        self,
        prompts: Mapping[int, Sequence[str]],
        seeds: Sequence[int],
        frames: int,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        solver: str | None = None,
        shift: float | None = None,
        context_time: float | None = None,
        kv_cache: bool = True,
        context_guidance: float | None = None,
        history_guidance: float | None = None,
    ) -> Iterator[np.ndarray]:
        """Stream one video per seed, in one batch: yields uint8 chunks (N, f, H, W, 3) until
        ``frames`` frames are out.

        ``prompts`` maps frames to prompt lists (one per video), {0: [...]} at least: each
        holds from the first chunk that starts at or after its frame. ``guidance_scale`` guides
        the first chunk, ``context_guidance`` (default ``stream.guidance``) the others, and
        ``history_guidance`` (default ``stream.history_guidance``) pushes each of them away
        from itself made without its context;
        ``context_time`` (default ``stream.context_time``) is the time the context is given
        at; ``kv_cache=False`` recomputes the context at every step (the same video, slower).
        """
        cfg = self.config
        settings = self._stream_settings(
            num_steps,
            guidance_scale,
            solver,
            shift,
            context_time,
            context_guidance,
            kv_cache,
            history_guidance,
        )
        STREAM_FRAMES.check("frames", frames)
        for s in seeds:
            SEED.check("seed", s)
        texts = self._stream_texts(prompts, len(seeds))
        data, model, st = cfg.data, cfg.model, cfg.stream
        per_chunk = model.chunk * model.patch[0]
        t, h, w = self.autoencoder.latent_shape(per_chunk, data.height, data.width)
        if t != per_chunk:
            raise InputError("streaming needs an autoencoder without temporal compression")
        noise = self._noise_streams(seeds, h, w)
        amp = autocast_dtype(self.precision, self.device)
        made = 0
        with speed.attention(self.model, self.attention), autocast(self.device, amp):
            for x in stream_latents(
                self.model, texts, noise, frames, st.window, settings, st.anchor
            ):
                if not bool(torch.isfinite(x).all()):
                    raise InputError(f"sampling produced NaN or infinite values at frame {made}")
                video = to_uint8(self.autoencoder.decode(x.float()))
                yield video[:, : frames - made]
                made += video.shape[1]
                if made >= frames:
                    return

    @torch.no_grad()
    def next_chunk(
        self,
        frames: np.ndarray,
        prompts: Sequence[str],
        seeds: Sequence[int],
        num_steps: int | None = None,
        context_guidance: float | None = None,
        context_time: float | None = None,
        history_guidance: float | None = None,
    ) -> np.ndarray:
        """The chunk a streaming model makes after given frames: uint8 (N, T, H, W, 3) context
        (T a multiple of the chunk's frames, the anchor and window as generation holds them)
        -> uint8 (N, chunk, H, W, 3), one per prompt and seed, sampled as
        :meth:`stream_batch` samples every chunk after the first."""
        frames = np.asarray(frames)
        cfg, n = self.config, len(seeds)
        settings = self._stream_settings(
            num_steps, None, None, None, context_time, context_guidance, True, history_guidance
        )
        per_chunk = cfg.model.chunk * cfg.model.patch[0]
        d = cfg.data
        expected = (d.height, d.width, 3)
        if frames.dtype != np.uint8 or frames.shape[0] != n or frames.shape[2:] != expected:
            raise InputError(
                f"context must be uint8 (N={n}, T, {d.height}, {d.width}, 3), got "
                f"{frames.dtype} {tuple(frames.shape)}"
            )
        if not frames.shape[1] or frames.shape[1] % per_chunk:
            raise InputError(
                f"context frames must be a multiple of {per_chunk}, got {frames.shape[1]}"
            )
        texts = self._stream_texts({0: list(prompts)}, n)(0)
        x = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
        context = self.autoencoder.encode(x.to(self.device))
        noise = self._noise_streams(seeds, *context.shape[3:])
        x = noise(per_chunk)  # the chunk's noise first, then the context's, as in streaming
        context = context_at(context, noise, settings)
        amp = autocast_dtype(self.precision, self.device)
        with speed.attention(self.model, self.attention), autocast(self.device, amp):
            chunk = sample_chunk(self.model, x, context, texts, settings)
        return to_uint8(self.autoencoder.decode(chunk.float()))

    def _noise_streams(self, seeds: Sequence[int], h: int, w: int) -> Callable[[int], torch.Tensor]:
        """noise(n): the next n latent frames (B, C, n, h, w) of each seed's own noise stream."""
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        channels = self.config.model.in_channels

        def noise(n: int) -> torch.Tensor:
            shape = (channels, n, h, w)
            return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(self.device)

        return noise

    def _sampling(
        self,
        num_steps: int | None,
        guidance_scale: float | None,
        solver: str | None,
        shift: float | None,
        step_cache: float = 0.0,
    ) -> tuple[int, float, str, float]:
        """(steps, guidance, solver, shift): the arguments given, else the config's ``flow``
        section, checked (a student's limits too)."""
        flow = self.config.flow
        steps = flow.sample_steps if num_steps is None else num_steps
        scale = flow.guidance if guidance_scale is None else guidance_scale
        shift = flow.shift if shift is None else shift
        solver = flow.solver if solver is None else solver
        for name, value, key in (
            ("num_steps", steps, "flow.sample_steps"),
            ("guidance_scale", scale, "flow.guidance"),
            ("shift", shift, "flow.shift"),
        ):
            RANGES[key].check(name, value)
        if solver not in SOLVERS:
            raise InputError(f"solver '{solver}' is unknown: one of {', '.join(SOLVERS)}")
        check_student(self.config, steps, scale, solver, shift, step_cache)
        return steps, scale, solver, shift

    def _stream_settings(
        self,
        num_steps: int | None,
        guidance_scale: float | None,
        solver: str | None,
        shift: float | None,
        context_time: float | None,
        context_guidance: float | None,
        kv_cache: bool,
        history_guidance: float | None = None,
    ) -> StreamSettings:
        """How :meth:`stream_batch` samples each chunk: the arguments, else the config's
        ``flow`` and ``stream`` sections, checked."""
        cfg = self.config
        steps, scale, solver, shift = self._sampling(num_steps, guidance_scale, solver, shift)
        if not cfg.model.chunk:
            raise InputError(
                f"this model makes clips of {cfg.data.frames} frames; streaming any length "
                "needs a block-causal model (model.chunk > 0), e.g. the bundled shapes-long"
            )
        st = cfg.stream
        context_time = st.context_time if context_time is None else context_time
        context_guidance = st.guidance if context_guidance is None else context_guidance
        RANGES["stream.context_time"].check("context_time", context_time)
        history = st.history_guidance if history_guidance is None else history_guidance
        RANGES["stream.guidance"].check("context_guidance", context_guidance)
        RANGES["stream.history_guidance"].check("history_guidance", history)
        return StreamSettings(
            steps, scale, context_guidance, solver, shift, context_time, kv_cache, history
        )

    def _stream_texts(
        self, prompts: Mapping[int, Sequence[str]], videos: int
    ) -> Callable[[int], tuple]:
        """The encoded captions (and empty captions) of the chunk starting at a frame: each
        prompt list of ``prompts`` holds from its frame on."""
        if 0 not in prompts or any(len(p) != videos for p in prompts.values()):
            raise InputError("prompts need an entry at frame 0 and one prompt per seed in each")
        encoded = {}
        for frame, texts in prompts.items():
            texts = [check_prompt(p) for p in texts]
            null = self.text_encoder.encode([""] * len(texts))
            encoded[frame] = (*self.text_encoder.encode(texts), *null)
        starts = sorted(encoded)
        return lambda frame: encoded[max(f for f in starts if f <= frame)]

    def network(self, steps: int) -> Callable[..., torch.Tensor]:
        """The model as the sampler calls it: (x, t, text, mask) -> velocity; a student with a
        step input is told the size of the sampler's steps, 1 / ``steps``."""
        if not self.config.model.step_input:
            return self.model

        def student(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, mask: Any) -> Any:
            return self.model(x, t, text, mask, step=t.new_full((x.shape[0],), 1.0 / steps))

        return student

    def given(
        self, given: Sequence[dict[int, np.ndarray]] | None, count: int, latent: tuple
    ) -> Given | None:
        """The sampler's fixed frames for ``given`` (see :meth:`generate`), checked."""
        if not given or not any(given):
            return None
        if len(given) != count:
            raise InputError(f"{count} videos need as many sets of given frames, got {len(given)}")
        if mix(self.config)["t2v"] == 1.0:
            raise InputError(
                "this model was trained for text to video only (no flow.mix_* besides t2v): "
                "it cannot take given frames"
            )
        data = self.config.data
        time_frames = latent[0] // self.config.model.patch[0]
        return to_given(list(given), self.autoencoder, data.frames, time_frames, self.device)
