"""What a `univid bench` run measures: :class:`BenchSettings` and the values its fields allow.

This module imports no torch, so the command line can build its parser from these constants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from univid.config.sections import RANGES as CONFIG_RANGES
from univid.errors import InputError
from univid.limits import BATCH, REPEATS, SWEEP_GB, SWEEP_TOKENS, THREADS, Range

SUITES = ("steps", "attention", "precision", "checkpointing", "quant", "compile", "sweep")
DEFAULT_SUITES = ("steps", "attention", "precision", "compile")
VERSUS = ("diffusers",)
# The range of each numeric field.
RANGES: dict[str, Range] = {
    "batch": BATCH,
    "frames": CONFIG_RANGES["data.frames"],
    "height": CONFIG_RANGES["data.height"],
    "width": CONFIG_RANGES["data.width"],
    "text_len": CONFIG_RANGES["text.max_length"],
    "repeats": REPEATS,
    "warmup": REPEATS,
    "sweep_depth": CONFIG_RANGES["model.depth"],
    "sweep_max_tokens": SWEEP_TOKENS,
    "sweep_max_gb": SWEEP_GB,
    "threads": THREADS,
}


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    """One bench run: the model and input size, what to measure, and where the results go."""

    size: str = "S"
    """Preset whose model is measured (tiny, S, B, L, XL)."""
    overrides: tuple[str, ...] = ()
    """``section.key=value`` overrides of the preset."""
    batch: int = 2
    """Videos per step."""
    frames: int = 8
    """Video frames of the synthetic inputs (a multiple of the temporal patch)."""
    height: int = 64
    """Video height in pixels (a multiple of the spatial patch)."""
    width: int = 64
    """Video width in pixels (a multiple of the spatial patch)."""
    text_len: int = 32
    """Caption tokens, all real (no padding)."""
    repeats: int = 5
    """Timed runs per measurement."""
    warmup: int = 2
    """Untimed runs before the timed ones (the first also compiles and allocates)."""
    suites: tuple[str, ...] = DEFAULT_SUITES
    """Which of :data:`SUITES` to run."""
    vs: str | None = None
    """Also time another implementation at the same size: one of :data:`VERSUS`, or None."""
    vs_compile: bool = False
    """With ``vs``: also compare both with compiled blocks."""
    sweep_depth: int = 2
    """Blocks of the token-sweep model."""
    sweep_max_tokens: int = 16384
    """Largest token count of the sweep."""
    sweep_max_gb: float = 12.0
    """Skip naive-attention sweep points whose N x N scores would need more GB than this."""
    threads: int = 0
    """CPU threads for torch (0 = torch's default)."""
    device: str = "auto"
    """One of :data:`univid.device.DEVICES` (checked by :func:`univid.device.pick_device`)."""
    jsonl: Path | None = None
    """Also write the JSON lines to this file."""
    report: Path | None = None
    """Write a Markdown report (and the sweep plot next to it) here."""
    from_jsonl: Path | None = None
    """Render ``report`` from an earlier ``jsonl`` file and measure nothing."""
    command_line: str = "univid bench"
    """The command line recorded at the top of the report."""

    def __post_init__(self) -> None:
        for name, allowed in RANGES.items():
            allowed.check(f"bench {name}", getattr(self, name))
        if isinstance(self.suites, str):
            raise InputError(
                f"bench suites must be a tuple of names, got the string {self.suites!r}"
            )
        unknown = sorted(set(self.suites) - set(SUITES))
        if unknown:
            raise InputError(
                f"unknown suite(s) {', '.join(unknown)}: choose from {', '.join(SUITES)}"
            )
        if not self.suites:
            raise InputError(f"no suite chosen: choose from {', '.join(SUITES)}")
        if self.vs is not None:
            _check_choice("vs", self.vs, VERSUS)
        if self.from_jsonl is not None and self.report is None:
            raise InputError("--from-jsonl needs --report PATH")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"bench {name} must be one of {', '.join(allowed)}, got {value!r}")


def parse_suites(text: str) -> tuple[str, ...]:
    """``"all"`` or comma-separated suite names, as given on the command line."""
    if text.strip() == "all":
        return SUITES
    return tuple(name.strip() for name in text.split(",") if name.strip())


def settings_from_options(options: Mapping[str, object], command_line: str) -> BenchSettings:
    """:class:`BenchSettings` from parsed command-line options (suites and paths as strings);
    options that are not settings are ignored."""
    given = {f.name: options[f.name] for f in fields(BenchSettings) if f.name in options}
    if isinstance(given.get("suites"), str):
        given["suites"] = parse_suites(given["suites"])
    for name in ("jsonl", "report", "from_jsonl"):
        if given.get(name) is not None:
            given[name] = Path(given[name])
    given["overrides"] = tuple(given.get("overrides", ()))
    return BenchSettings(**given, command_line=command_line)
