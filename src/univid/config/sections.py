"""The config's sections as typed dataclasses, and the checks every config passes."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from univid.errors import ConfigError
from univid.limits import FRACTION, SEED, THREADS, TOKENS, Range

# Autoencoders known by name (anything else names a local diffusers VAE folder): 'pixel' is RGB
# itself, 'taef2' the bundled TAEF2 (univid.autoencoder.taef2). The first is the default.
BUILTIN_AUTOENCODERS: tuple[str, ...] = ("pixel", "taef2")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The network: a single stream over [time | text | video] tokens."""

    backbone: str = "dit"
    """'dit' (adaLN-Zero, 3-D RoPE, QK-norm) or 'encoder' (stock torch.nn.TransformerEncoder)."""
    in_channels: int = 3
    """Channels of the video the model sees (3 for RGB pixels)."""
    patch: tuple[int, int, int] = (2, 4, 4)
    """Patch size (frames, rows, columns) that turns the video into tokens."""
    width: int = 256
    """Token width D shared by every modality."""
    depth: int = 6
    """Number of transformer layers."""
    heads: int = 4
    """Attention heads; must divide width."""
    mlp_ratio: float = 4.0
    """Hidden size of the feed-forward block as a multiple of width."""
    text_dim: int = 384
    """Width of the text encoder's hidden states (384 for MiniLM-L6)."""
    time_freq_dim: int = 256
    """Number of sinusoidal features of t before the time MLP."""
    prediction: str = "velocity"
    """What the head predicts: 'velocity', or 'data' (clean video, turned into a velocity)."""
    time_mode: str = "token"
    """encoder: how t enters, 'token' (a time token) or 'token+add' (also added to every token)."""
    adaln: str = "block"
    """dit: 'block' (adaLN-Zero, a modulation MLP per block) or 'shared' (one MLP + offsets)."""
    mlp: str = "gelu"
    """dit: feed-forward block, 'gelu' or 'swiglu' (same parameter count)."""
    qk_norm: bool = True
    """dit: RMS-normalise queries and keys per head before RoPE."""
    step_input: bool = False
    """dit: also condition on the sampler's step size (few-step students of ``univid distill``
    with ``distill.method=average``); its embedding starts at zero, so a model that gains it
    starts exactly as the model it came from."""
    chunk: int = 0
    """dit: block-causal attention over chunks of this many latent frames (a chunk sees the
    caption, itself and earlier chunks, never later ones), for streaming generation of any
    length with a KV cache (``stream`` section); 0 is full attention."""


@dataclass(frozen=True, kw_only=True)
class TextConfig:
    """The frozen text encoder."""

    encoder: str = "minilm"
    """'minilm' (bundled all-MiniLM-L6-v2) or a local Hugging Face encoder folder."""
    max_length: int = 32
    """Captions are truncated to this many tokens."""
    padding: str = "longest"
    """'longest' (pad a batch to its longest caption) or 'max_length' (always max_length
    tokens: fixed shapes, e.g. for torch.compile)."""


@dataclass(frozen=True, kw_only=True)
class FlowConfig:
    """Rectified flow: time sampling in training, ODE sampling at generation."""

    time_sampling: str = "logit_normal"
    """'logit_normal' or 'uniform'."""
    logit_mean: float = 0.0
    """Mean of the logit-normal time distribution."""
    logit_std: float = 1.0
    """Standard deviation of the logit-normal time distribution."""
    sample_steps: int = 25
    """Default number of sampling steps (intervals of the time grid)."""
    solver: str = "euler"
    """ODE solver when sampling: 'euler' (1 forward per step), 'heun' or 'midpoint' (2nd order,
    about 2 forwards per step)."""
    step_cache: float = 0.0
    """Step cache threshold when sampling: skip the blocks while the accumulated relative change
    of their input stays below it (TeaCache-style); 0 turns it off."""
    shift: float = 1.0
    """Time shift s of the sampling schedule, t' = s t / (1 + (s - 1) t); 1 is no shift."""
    guidance: float = 4.0
    """Default classifier-free guidance scale; 1 disables guidance."""
    mix_t2v: float = 1.0
    """Training mix, weight of text-to-video samples: one time for every frame."""
    mix_per_frame: float = 0.0
    """Training mix, weight of samples with an independent time per latent frame."""
    mix_i2v: float = 0.0
    """Training mix, weight of samples whose first latent frame is given (image to video)."""
    mix_extend: float = 0.0
    """Training mix, weight of samples whose first k latent frames are given (extension), k
    uniform in 2 .. frames - 1."""
    mix_interpolate: float = 0.0
    """Training mix, weight of samples whose first and last latent frames are given."""


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Training data."""

    dataset: str = "shapes"
    """Dataset when no cache is given; 'shapes' is the procedural shapes world of univid."""
    cache: str = ""
    """A folder made by `univid prepare` (latents + text states); when set, training reads it,
    and the autoencoder, text encoder, channels and clip shape come from it."""
    autoencoder: str = BUILTIN_AUTOENCODERS[0]
    """The space the model works in: 'pixel' (RGB in [-1, 1]), 'taef2' (the bundled TAEF2: 32
    channels at 1/8 of the size, frame by frame) or a local diffusers autoencoder folder (the
    model sees its normalised latents; generation decodes them)."""
    frames: int = 8
    """Frames per clip."""
    height: int = 32
    """Frame height in pixels."""
    width: int = 32
    """Frame width in pixels."""
    fps: int = 8
    """Frames per second of written videos."""
    caption_dropout: float = 0.1
    """Probability of replacing a caption by the empty caption (trains the null condition)."""
    novel_fraction: float = 0.0
    """Shapes world only: the share of training clips that show a concept outside the bundled
    model's world (an orange colour or a diamond shape, univid.data.shapes.NOVEL_*), drawn
    evenly over the colour-shape pairs that have one; the rest are old-world clips. 0 (the
    default) is the old world's stream, clip for clip."""
    max_bad_fraction: float = 0.1
    """Bad samples (skipped and logged) tolerated before training stops; judged once 10 global
    batches were read (`univid prepare` has its own --max-bad-fraction)."""
    prefetch: str = "auto"
    """Where batches are built: 'thread' (ahead of the step, on a background thread), 'off' (in
    the step), or 'auto' (ahead when training on CUDA, in the step on a CPU, whose cores the
    step already uses)."""
    tokens_per_batch: int = 0
    """Bucketed caches: per-bucket batch = this // video tokens of a clip (at least 1), so
    every batch has about the same tokens; 0 uses train.batch_size for every bucket."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The optimisation loop."""

    steps: int = 4000
    """Optimizer steps."""
    batch_size: int = 32
    """Clips per step."""
    lr: float = 5e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup: int = 200
    """Linear warm-up steps."""
    decay: str = "cosine"
    """Learning-rate shape after warm-up: 'constant' or 'cosine' (to 10 % of the peak)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables it."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights."""
    precision: str = "auto"
    """'auto' (bf16 autocast on CUDA with bf16 support, else fp32), 'fp32' or 'bf16'."""
    seed: int = 0
    """Seed of the model init, the data stream and the noise."""
    log_every: int = 25
    """Steps between metric rows; the loop reads loss, gradient norm and the guards' flags from
    the device only at these rows, checkpoints, samples and validations."""
    sample_every: int = 500
    """Steps between sample GIFs; 0 disables them."""
    ckpt_every: int = 500
    """Steps between checkpoints; the last step always checkpoints."""
    val_every: int = 250
    """Steps between validation losses (held-out clips, fixed noise and t); 0 disables them."""
    val_clips: int = 32
    """Held-out clips in the validation set (each is scored at 8 fixed values of t)."""
    keep_last: int = 2
    """Checkpoints kept on disk; older ones are deleted after a new one is complete."""
    max_nonfinite: int = 5
    """Consecutive steps with a NaN/inf loss or gradient (each skipped, no update) before the run
    stops; 0 turns the guard off (and saves its per-step copy of the weights and Adam moments)."""
    spike_factor: float = 10.0
    """Log a gradient-norm spike above this multiple of the norm's running mean; 0 = off."""
    threads: int = 0
    """CPU threads for torch; 0 leaves torch's default."""
    device: str = "auto"
    """'auto' (CUDA if present, else CPU), 'cpu' or 'cuda'."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step; the global batch is
    batch_size x ranks x grad_accum."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (less memory, ~1/3 more compute)."""
    compile: bool = False
    """torch.compile each block (regional compilation) before training."""


@dataclass(frozen=True, kw_only=True)
class ParallelConfig:
    """Scaling out with torch.distributed (launch with torchrun)."""

    mode: str = "none"
    """'none' (one process), 'ddp' (replicated weights) or 'fsdp' (FSDP2 sharded weights)."""
    backend: str = "auto"
    """Process-group backend: 'auto' (NCCL on CUDA, gloo on CPU), 'gloo' or 'nccl'."""
    timeout_s: int = 600
    """Seconds a collective may wait for the other ranks before the run fails."""
    reshard_after_forward: bool = True
    """fsdp: free gathered weights after each block's forward (ZeRO-3) rather than keep them."""


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    """Fine-tuning a trained model (``univid finetune BASE``): low-rank adapters through PEFT,
    or all the weights."""

    base: str = ""
    """The model to start from (a bundled name or a model folder); '' trains from scratch."""
    base_sha256: str = ""
    """SHA-256 of the base's model.safetensors, recorded when the run starts; a resume or an
    adapter load refuses a base whose weights changed."""
    rank: int = 8
    """Rank of the adapters; 0 fine-tunes every weight of the base instead (no adapters)."""
    alpha: float = 0.0
    """Adapter scale numerator (the update is alpha / rank x B A); 0 means alpha = rank."""
    targets: str = "attention+mlp"
    """Linears of the blocks that get adapters: 'attention+mlp', 'attention' or 'mlp'."""


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """Few-step distillation (``univid distill TEACHER``): a student that starts from its teacher
    (``lora.base``, every weight trained) and learns from the teacher's own sampling paths."""

    method: str = ""
    """'' (not a distillation run), 'average' (the average velocity over each of the student's
    steps, measured on the teacher's paths; the student also sees its step size) or 'reflow'
    (straight lines from each noise to the teacher's video from it)."""
    guidance: float = 4.0
    """Classifier-free guidance of the teacher's paths; the student has it built in and samples
    with guidance 1 (one forward per step)."""
    teacher_steps: int = 24
    """Euler steps of the teacher along each path; a multiple of distill.max_steps."""
    max_steps: int = 4
    """The student's most steps, a power of two: it learns 1, 2, 4, ... up to it; the teacher's
    path is kept at each of its max_steps step ends."""
    paths: int = 4096
    """Teacher paths made before training (noise, conditioning and the states at the student's
    step ends); made once, in shards, and kept in the run folder."""
    paths_from: str = ""
    """A folder of teacher paths another run made with the same teacher and settings (its
    ``teacher_paths``), used instead of making them again; '' makes the run's own."""

    @property
    def step_counts(self) -> tuple[int, ...]:
        """The step counts the student learns: 1, 2, 4, ... up to ``max_steps``."""
        return tuple(2**k for k in range(self.max_steps.bit_length()))


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """Streaming (models with ``model.chunk`` > 0): a video of any length made chunk by chunk,
    each chunk generated from a window of the frames before it."""

    window: int = 12
    """Latent frames of context each chunk is generated from (a multiple of model.chunk):
    the frames right before it; training clips are the anchor, this window and one chunk
    (data.frames)."""
    anchor: int = 0
    """Latent frames at the start of the video that stay in every chunk's context, ahead of
    the window (a multiple of model.chunk): they keep what the object looked like when the
    window has long moved on, against drift. 0: the window alone."""
    context_noise: float = 0.1
    """Training: the context frames are noised to a time drawn uniformly in [0, context_noise],
    so the model learns to read a context with the small errors of its own earlier chunks."""
    context_time: float = 0.0
    """Generation: the time the context frames are given at (re-noised to it); 0 gives them as
    they were generated."""
    guidance: float = 1.0
    """Generation: classifier-free guidance of every chunk after the first (the first, made from
    the caption alone, takes flow.guidance). Guidance above 1 amplifies what each chunk adds to
    its context, and objects grow chunk after chunk (docs/stream.md measures it)."""
    history_guidance: float = 1.0
    """Generation: guidance of every chunk after the first by its history: the chunk's velocity
    given its context, pushed away from its velocity without it (the model making a first
    chunk from the caption alone) by this scale, as in History Guidance (Song et al., 2025).
    Above 1 each chunk holds more closely to the motion its context shows (docs/stream.md);
    1 is off and costs nothing, else one more forward of the chunk alone a step."""
    start_share: float = 0.5
    """Training (the bouncing world): the share of windows that open their clip, where a
    generation begins with less context (0 .. window frames, uniformly); the others start later
    in a clip and have the whole window as context."""


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything needed to rebuild a run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "text": TextConfig,
    "flow": FlowConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "parallel": ParallelConfig,
    "lora": LoraConfig,
    "distill": DistillConfig,
    "stream": StreamConfig,
}

# The conditioning modes: what a training sample's frames are given, and what `univid eval
# --mode` measures (all but 'per_frame'); flow.mix_<mode> is each one's weight in training.
MODES = ("t2v", "per_frame", "i2v", "extend", "interpolate")
EVAL_MODES = tuple(m for m in MODES if m != "per_frame")
# `univid eval --mode long`: streamed videos (streaming models) of LONG_FRAMES frames by default.
LONG_MODE = "long"
LONG_FRAMES = 256
# Latent frames a mode needs: a given frame and one to generate; extension gives 2 or more.
MODE_FRAMES = {"t2v": 1, "per_frame": 1, "i2v": 2, "extend": 3, "interpolate": 3}

# Allowed values of the string-valued keys; the ones that belong to a module of their own are
# read from it when a config is checked (this module stays free of torch, so the CLI starts fast).
CHOICES: dict[str, tuple[str, ...]] = {
    "model.backbone": ("encoder", "dit"),
    "model.prediction": ("velocity", "data"),
    "model.time_mode": ("token", "token+add"),
    "model.adaln": ("block", "shared"),
    "model.mlp": ("gelu", "swiglu"),
    "flow.time_sampling": ("logit_normal", "uniform"),
    "data.dataset": ("shapes", "bounce"),
    "data.prefetch": ("auto", "thread", "off"),
    "train.decay": ("constant", "cosine"),
    "parallel.mode": ("none", "ddp", "fsdp"),
    "parallel.backend": ("auto", "gloo", "nccl"),
    "lora.targets": ("attention+mlp", "attention", "mlp"),
    "distill.method": ("", "average", "reflow"),
}


def choices() -> dict[str, tuple[str, ...]]:
    """Allowed values of every string-valued key, including those defined by the solvers,
    the text encoder and the device module."""
    from univid.device import DEVICES, PRECISIONS
    from univid.flow.sampler import SOLVERS
    from univid.text.encoder import PADDING

    return {
        **CHOICES,
        "flow.solver": SOLVERS,
        "text.padding": PADDING,
        "train.precision": PRECISIONS,
        "train.device": DEVICES,
    }


def clip(text: str, length: int) -> str:
    """``text`` cut to ``length`` characters (ending in '...' when cut)."""
    return text if len(text) <= length else text[: length - 3] + "..."


def show_value(value: Any, length: int = 60) -> str:
    """The repr of a user's value for a message, cut to ``length`` characters: a message never
    repeats a huge value (a config file may hold a megabyte string)."""
    return clip(repr(value), length)


def _check(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}={show_value(value)} is invalid: {allowed}")


# The range of every numeric key: generous ceilings, far above any real run, that keep typos
# from building absurd models or reaching torch with numbers it cannot take (whether a size in
# range fits the machine is judged by univid.memory before anything is allocated).
STEPS = Range(1, 10**9)
EVERY = Range(0, 10**9)
SIZE = Range(1, 65_536)
REAL = Range(0, 1e6, real=True)
RANGES: dict[str, Range] = {
    "model.in_channels": Range(1, 4_096),
    "model.patch": Range(1, 1_024),  # each of the three sizes
    "model.width": SIZE,
    "model.depth": Range(1, 1_024),
    "model.heads": Range(1, 1_024),
    "model.mlp_ratio": Range(0, 64, real=True, lo_open=True),
    "model.text_dim": SIZE,
    "model.time_freq_dim": Range(2, 65_536),
    "text.max_length": Range(1, 8_192),
    "flow.logit_mean": Range(-20, 20, real=True),
    "flow.logit_std": Range(0, 20, real=True, lo_open=True),
    "flow.sample_steps": Range(1, 10_000),
    "flow.step_cache": Range(0, 1_000, real=True),
    "flow.shift": Range(1e-3, 1e3, real=True),
    "flow.guidance": Range(0, 1_000, real=True),
    **{f"flow.mix_{mode}": Range(0, 1e6, real=True) for mode in MODES},
    "data.frames": Range(1, 8_192),
    "data.height": Range(1, 16_384),
    "data.width": Range(1, 16_384),
    "data.fps": Range(1, 1_000),  # a GIF frame lasts whole milliseconds
    "data.caption_dropout": Range(0, 0.999, real=True),
    "data.novel_fraction": FRACTION,
    "data.max_bad_fraction": FRACTION,
    "data.tokens_per_batch": Range(0, 2**24),
    "train.steps": STEPS,
    "train.batch_size": SIZE,
    "train.lr": Range(0, 10, real=True, lo_open=True),
    "train.weight_decay": Range(0, 100, real=True),
    "train.warmup": EVERY,
    "train.grad_clip": REAL,
    "train.ema_decay": Range(0, 0.999_999_999, real=True),
    "train.seed": SEED,
    "train.log_every": STEPS,
    "train.sample_every": EVERY,
    "train.ckpt_every": STEPS,
    "train.val_every": EVERY,
    "train.val_clips": Range(1, 4_096),
    "train.keep_last": Range(1, 1_000_000),
    "train.max_nonfinite": Range(0, 1_000_000),
    "train.spike_factor": REAL,
    "train.threads": THREADS,
    "train.grad_accum": SIZE,
    "parallel.timeout_s": Range(1, 10**8),  # about three years; fits a timedelta
    "lora.rank": Range(0, 65_536),
    "lora.alpha": Range(0, 1e6, real=True),
    "distill.guidance": Range(0, 1_000, real=True),
    "distill.teacher_steps": Range(1, 10_000),
    "distill.max_steps": Range(1, 1_024),
    "distill.paths": Range(1, 10**8),
    "model.chunk": Range(0, 10_000),
    "stream.window": Range(0, 10_000),
    "stream.anchor": Range(0, 10_000),
    "stream.context_noise": FRACTION,
    "stream.context_time": FRACTION,
    "stream.guidance": Range(0, 1_000, real=True),
    "stream.history_guidance": Range(0, 1_000, real=True),
    "stream.start_share": FRACTION,
}


def validate(cfg: Config) -> None:
    """Range and consistency checks that span fields and sections."""
    for key, allowed in choices().items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        _check(value in allowed, key, f"allowed: {', '.join(allowed)}", value)
    _check_ranges(cfg)
    _check_shapes(cfg)


def _check_ranges(cfg: Config) -> None:
    for key, allowed in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        for v in value if isinstance(value, tuple) else (value,):
            _check(v in allowed, key, f"must be {allowed.describe()}", value)


def mix(cfg: Config) -> dict[str, float]:
    """The training mix: mode -> probability (the ``flow.mix_*`` weights, normalised)."""
    weights = {mode: getattr(cfg.flow, f"mix_{mode}") for mode in MODES}
    total = sum(weights.values())
    return {mode: w / total for mode, w in weights.items()}


def _check_distill(cfg: Config) -> None:
    s, m = cfg.distill, cfg.model
    _check(
        s.max_steps & (s.max_steps - 1) == 0,
        "distill.max_steps",
        "a power of two (the student learns 1, 2, 4, ... steps up to it)",
        s.max_steps,
    )
    _check(
        s.teacher_steps % s.max_steps == 0,
        "distill.teacher_steps",
        f"a multiple of distill.max_steps={s.max_steps} (the paths are kept at its step ends)",
        s.teacher_steps,
    )
    if s.method:
        _check(
            bool(cfg.lora.base) and cfg.lora.rank == 0,
            "distill.method",
            "a student starts from its teacher: lora.base=TEACHER with lora.rank=0 (univid "
            "distill sets both)",
            s.method,
        )
        _check(
            m.step_input == (s.method == "average"),
            "model.step_input",
            "true exactly when distill.method=average (univid distill sets it)",
            m.step_input,
        )


def _check_stream(cfg: Config) -> None:
    m, s = cfg.model, cfg.stream
    if not m.chunk:
        return
    _check(
        m.backbone == "dit", "model.chunk", "block-causal attention needs the dit backbone", m.chunk
    )
    for key, value in (("stream.window", s.window), ("stream.anchor", s.anchor)):
        _check(
            value % m.chunk == 0,
            key,
            f"a multiple of model.chunk={m.chunk} (the context is whole chunks)",
            value,
        )
    clip = s.anchor + s.window + m.chunk
    _check(
        cfg.data.frames == clip * m.patch[0],
        "data.frames",
        f"a streaming model trains on its anchor, window and one chunk: {clip} latent frames "
        f"(stream.anchor + stream.window + model.chunk) x model.patch[0] = {clip * m.patch[0]}",
        cfg.data.frames,
    )


def _check_shapes(cfg: Config) -> None:
    m, d = cfg.model, cfg.data
    weights = [getattr(cfg.flow, f"mix_{mode}") for mode in MODES]
    _check(sum(weights) > 0, "flow.mix_t2v", "the flow.mix_* weights must not all be 0", 0)
    _check(
        not (m.backbone == "encoder" and m.time_mode == "token" and sum(weights[1:])),
        "model.time_mode",
        "per-frame time (a flow.mix_* other than t2v) needs token+add or the dit backbone",
        m.time_mode,
    )
    _check(len(m.patch) == 3, "model.patch", "three sizes", m.patch)
    _check(
        not (m.step_input and m.backbone != "dit"),
        "model.step_input",
        "needs the dit backbone",
        m.step_input,
    )
    _check_distill(cfg)
    _check_stream(cfg)
    _check(
        m.mlp_ratio * m.width >= 2,
        "model.mlp_ratio",
        f"the MLP needs a hidden size of 2 or more (mlp_ratio x width {m.width})",
        m.mlp_ratio,
    )
    _check(m.width % m.heads == 0, "model.heads", f"must divide model.width={m.width}", m.heads)
    if m.backbone == "dit":
        head = m.width // m.heads
        _check(
            head % 2 == 0 and head >= 6,
            "model.heads",
            f"dit needs an even head size >= 6 for 3-D RoPE, width/heads = {m.width}/{m.heads}",
            m.heads,
        )
    video = math.prod(n // p for n, p in zip((d.frames, d.height, d.width), m.patch))
    _check(
        video + cfg.text.max_length in TOKENS,
        "data.frames",
        f"the clip's tokens (video {video} + text) must be {TOKENS.describe()}",
        d.frames,
    )
    if d.autoencoder != "pixel" or d.cache:
        return  # channels and latent shape are checked once the autoencoder or cache is read
    _check(m.in_channels == 3, "model.in_channels", "pixel models see RGB: 3", m.in_channels)
    for name, size, p in zip(("frames", "height", "width"), (d.frames, d.height, d.width), m.patch):
        _check(
            size % p == 0,
            f"data.{name}",
            f"must be divisible by the patch size {p} of model.patch={m.patch}",
            size,
        )
