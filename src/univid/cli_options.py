"""The command line's options: how each is parsed and checked, shared by the commands of
:mod:`univid.cli` (which builds the parser from them and calls the library)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from univid import limits
from univid.config.sections import BUILTIN_AUTOENCODERS, EVAL_MODES, LONG_FRAMES, LONG_MODE, RANGES
from univid.data.shapes import PROMPT_SETS
from univid.limits import Range


class Choices:
    """An option's allowed values, read from the module that defines them when argparse first
    asks (so building the parser imports no torch, and no value is written twice)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def values(self) -> tuple[str, ...]:
        import importlib

        return tuple(getattr(importlib.import_module(self.module), self.name))

    def __iter__(self):
        return iter(self.values())

    def __contains__(self, value: object) -> bool:
        return value in self.values()

    def __len__(self) -> int:
        return len(self.values())


SOLVERS = Choices("univid.flow", "SOLVERS")
ATTENTION_BACKENDS = Choices("univid.speed", "ATTENTION_BACKENDS")
QUANTIZATION = Choices("univid.speed", "QUANTIZATION")
PRECISIONS = Choices("univid.device", "PRECISIONS")
DEVICES = Choices("univid.device", "DEVICES")
DTYPES = Choices("univid.device", "DTYPES")
PADDING = Choices("univid.text.encoder", "PADDING")
RESIZE_MODES = Choices("univid.data.decode", "RESIZE_MODES")


def number(allowed: Range | str) -> Callable[[str], int | float]:
    """An argparse type: a number in ``allowed`` (a :class:`Range` or a config key, whose range
    the option shares). NaN, infinities and numbers out of range are argparse's own one-line
    error (exit 2), before anything runs."""
    allowed = RANGES[allowed] if isinstance(allowed, str) else allowed

    def parse(text: str) -> int | float:
        value = float(text) if allowed.real else int(text)
        if value not in allowed:
            raise argparse.ArgumentTypeError(f"must be {allowed.describe()}, got {text}")
        return value

    parse.__name__ = "float" if allowed.real else "int"  # argparse names it in its errors
    return parse


def add_choice(
    p: argparse.ArgumentParser, flag: str, choices: Choices, help: str = "", **kwargs: object
) -> None:
    """An option whose values come from ``choices``: the metavar keeps argparse from reading
    them while the parser is built; help lists them when it is shown."""
    metavar = flag.lstrip("-").upper().replace("-", "_")
    help = f"{help} (%(choices)s)" if help else "one of %(choices)s"
    p.add_argument(flag, choices=choices, metavar=metavar, help=help, **kwargs)


def given_frame(text: str) -> tuple[int, str]:
    """An argparse type: ``INDEX=PATH`` of ``--frame``."""
    index, sep, path = text.partition("=")
    try:
        if not sep or not path:
            raise ValueError
        return int(index), path
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be INDEX=PATH, got {text!r}") from None


def add_given_options(p: argparse.ArgumentParser) -> None:
    """Frames given to generation (models trained with a flow.mix_* besides t2v)."""
    p.add_argument("--image", metavar="PATH", help="first frame (image to video)")
    p.add_argument("--last-image", metavar="PATH", help="last frame (with --image: in-between)")
    p.add_argument(
        "--frame",
        type=given_frame,
        action="append",
        default=[],
        metavar="INDEX=PATH",
        help="an image at frame INDEX (negative counts from the end: --frame=-2=x.png); repeatable",
    )
    p.add_argument("--video", metavar="PATH", help="a clip to continue from its last frames")
    p.add_argument(
        "--keep",
        type=number(limits.KEEP),
        help="frames of --video to continue, at the model's fps (default: half the model's)",
    )


def add_stream_options(p: argparse.ArgumentParser) -> None:
    """Streamed generation of any length (streaming models, model.chunk > 0)."""
    p.add_argument(
        "--frames",
        type=number(limits.STREAM_FRAMES),
        help="stream a video of this many frames, chunk by chunk, writing each as it is made "
        "(.mp4 grows as you watch; Ctrl-C keeps what was made)",
    )
    p.add_argument(
        "--prompt-at",
        nargs=2,
        action="append",
        default=[],
        metavar=("FRAME", "PROMPT"),
        help="with --frames: a new prompt from the first chunk at or after FRAME; repeatable",
    )
    add_history_option(p, "with --frames")


def add_history_option(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument(
        "--history-guidance",
        type=number("stream.history_guidance"),
        metavar="S",
        help=f"{where}: guide each chunk after the first by its context, against itself made "
        "without it (1 = off; default: the model's stream.history_guidance)",
    )


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--steps", type=number("flow.sample_steps"), help="sampling steps (default: the model's)"
    )
    p.add_argument(
        "--guidance", type=number("flow.guidance"), help="classifier-free guidance scale"
    )


def add_speed_options(p: argparse.ArgumentParser) -> None:
    add_choice(p, "--solver", SOLVERS, help="ODE solver (default: the model's)")
    p.add_argument(
        "--shift", type=number("flow.shift"), help="time shift of the step schedule (1 = uniform)"
    )
    p.add_argument(
        "--step-cache",
        type=number("flow.step_cache"),
        metavar="T",
        help="skip the blocks while their input changed less than T in total (0 = off)",
    )
    add_choice(p, "--attention", ATTENTION_BACKENDS, default="auto")
    add_choice(p, "--precision", PRECISIONS, default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile each block (cached)")
    add_choice(p, "--quantize", QUANTIZATION, default="none", help="int8 via torchao")
    add_lora_options(p)


def add_lora_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", metavar="DIR", help="a LoRA adapter (or fine-tuning run) folder")
    p.add_argument(
        "--lora-scale",
        type=number(limits.LORA_SCALE),
        default=1.0,
        metavar="S",
        help="strength of the adapter (1 = as trained, 0 = the base)",
    )


def add_bench_options(p: argparse.ArgumentParser) -> None:
    from univid.bench.settings import SUITES, VERSUS, BenchSettings  # no torch

    d = BenchSettings()
    p.add_argument(
        "--size", default=d.size, help="preset whose model is measured (tiny, S, B, L, XL)"
    )
    p.add_argument("overrides", nargs="*", help="section.key=value overrides of the preset")
    p.add_argument("--batch", type=int, default=d.batch, help="videos per step")
    p.add_argument("--frames", type=int, default=d.frames)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--text-len", type=int, default=d.text_len, help="caption tokens (all real)")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed runs per measurement")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed runs first (>= 1)")
    p.add_argument(
        "--suites",
        default=",".join(d.suites),
        help=f"comma-separated, or 'all': {', '.join(SUITES)}",
    )
    p.add_argument("--vs", choices=VERSUS, help="also time diffusers' CogVideoX transformer")
    p.add_argument("--vs-compile", action="store_true", help="also compare both compiled")
    p.add_argument(
        "--sweep-depth", type=int, default=d.sweep_depth, help="blocks of the token-sweep model"
    )
    p.add_argument(
        "--sweep-max-tokens", type=int, default=d.sweep_max_tokens, help="largest sweep size"
    )
    p.add_argument(
        "--sweep-max-gb", type=float, default=d.sweep_max_gb, help="skip naive sweeps above"
    )
    p.add_argument(
        "--threads", type=int, default=d.threads, help="CPU threads (0 = torch's default)"
    )
    add_choice(p, "--device", DEVICES, default=d.device)
    p.add_argument("--jsonl", help="also write the JSON lines to this file")
    p.add_argument("--report", help="write a Markdown report (and the sweep plot) here")
    p.add_argument("--from-jsonl", help="render --report from an earlier --jsonl, measure nothing")


def add_prepare_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="folder of videos/images with .txt captions, or a .csv/.jsonl table")
    p.add_argument("--out", help="cache folder (rerun the same command to resume)")
    p.add_argument("--check", action="store_true", help="only list unusable clips and why")
    p.add_argument(
        "--autoencoder",
        default=BUILTIN_AUTOENCODERS[0],
        help=f"{' or '.join(BUILTIN_AUTOENCODERS)} (bundled) or a local diffusers folder",
    )
    p.add_argument("--text-encoder", default="minilm", help="'minilm' or a local HF folder")
    p.add_argument(
        "--max-length", type=number("text.max_length"), default=32, help="caption tokens kept"
    )
    add_choice(p, "--padding", PADDING, default="longest")
    p.add_argument(
        "--frames", type=number("data.frames"), default=8, help="frames per clip (one bucket)"
    )
    p.add_argument("--height", type=number("data.height"), default=32)
    p.add_argument("--width", type=number("data.width"), default=32)
    p.add_argument(
        "--buckets", help="FxHxW,... shapes to group clips into (default: frames x height x width)"
    )
    p.add_argument(
        "--fps",
        type=number(limits.PREPARE_FPS),
        default=8.0,
        help="frame rate clips are resampled to",
    )
    p.add_argument(
        "--stride",
        type=number(limits.STRIDE),
        default=0,
        help="sample each clip from every N-th source frame instead of at --fps (0: use --fps)",
    )
    p.add_argument(
        "--window-stride",
        type=number(limits.WINDOW_STRIDE),
        default=0,
        help="cut each video into many clips: a window every N clip frames (at --fps, or of "
        "--stride), within each shot (never across a cut); 0: one clip per video, its start",
    )
    add_choice(p, "--resize", RESIZE_MODES, default="crop")
    p.add_argument("--max-source-pixels", type=number(limits.SOURCE_PIXELS), default=8192 * 8192)
    add_choice(p, "--dtype", DTYPES, default="float32")
    p.add_argument(
        "--shard-size", type=number(limits.SHARD_SIZE), default=64, help="clips per shard file"
    )
    p.add_argument(
        "--batch-size", type=number(limits.BATCH), default=4, help="clips encoded together"
    )
    p.add_argument("--max-bad-fraction", type=number(limits.FRACTION), default=0.1)
    add_choice(p, "--device", DEVICES, default="auto")


def add_info_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="shapes-tiny", help="preset (tiny, S, B, L, XL, ...), config or folder"
    )
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument(
        "--frames", type=number("data.frames"), help="video frames (default: the config's)"
    )
    p.add_argument(
        "--height", type=number("data.height"), help="video height (default: the config's)"
    )
    p.add_argument("--width", type=number("data.width"), help="video width (default: the config's)")
    p.add_argument(
        "--text-len", type=number("text.max_length"), help="text tokens (default: text.max_length)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="bundled model name or model folder (default: shapes-tiny; with --mode long, the "
        "streaming model shapes-long)",
    )
    add_choice(
        p,
        "--mode",
        (*EVAL_MODES, LONG_MODE),
        default="t2v",
        help="what each video is given: nothing, frame 0, the first half of a held-out clip, "
        f"or its first and last frames; or '{LONG_MODE}': a streamed video of --frames frames "
        "(streaming models), judged whole",
    )
    p.add_argument(
        "--frames",
        type=number(limits.STREAM_FRAMES),
        default=LONG_FRAMES,
        help=f"--mode {LONG_MODE}: frames of each video",
    )
    add_history_option(p, f"--mode {LONG_MODE}")
    add_choice(
        p,
        "--prompts",
        PROMPT_SETS,
        default=PROMPT_SETS[0],
        help="which prompts: the world's colour x shape x direction ones, or every one with a "
        "concept the bundled model never saw (orange, diamond)",
    )
    p.add_argument("--seeds", type=number(limits.EVAL_SEEDS), default=2, help="seeds per prompt")
    p.add_argument(
        "--seed-offset",
        type=number(limits.SEED),
        default=1_000_000,
        help="first seed (seeds offset..offset+seeds-1); the default is far from the seeds that "
        "training, development and the docs use",
    )
    add_sampling_options(p)
    p.add_argument(
        "--batch-size", type=number(limits.BATCH), default=42, help="videos per sampling batch"
    )
    p.add_argument("--out", default="report.json", help="JSON report path")
    p.add_argument(
        "--grid",
        help="labelled grid image, or with --mode long the drift plot (default: report path "
        "with .png)",
    )
    add_choice(p, "--device", DEVICES, default="auto")
    add_speed_options(p)


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in one line like every other error of univid."""

    def error(self, message: str) -> NoReturn:
        if "required: prompt" in message:
            message += " (a prompt that starts with '-' goes after '--')"
        self.exit(2, f"univid: error: {message} (see '{self.prog} --help')\n")
