"""`univid bench`: speed and memory of the model's training and sampling steps, as JSON lines.

Every measurement is one JSON line on stdout: a train step (forward + flow loss + backward +
AdamW) or a sampling step (one guided velocity, batch 2B for the two branches of classifier-free
guidance, plus the Euler update) on synthetic inputs of the configured size; median and min of
``--repeats`` timed runs after warm-up, tokens/s, peak memory and MFU.

- **FLOPs** are counted with ``torch.utils.flop_counter`` on the real step; **MFU** = FLOPs /
  (time x peak), the peak measured on the spot with a large matmul on CPU, or the device's
  datasheet dense bf16/fp32 peak on known GPUs (measured otherwise).
- **Peak memory** = weights + optimizer state (counted from their tensors) + the most the step
  allocates above that. On CUDA the allocator's peak; on CPU the process's peak resident set
  (Linux VmHWM, reset before each step through /proc/self/clear_refs), with glibc told to give
  large blocks back to the system so the resident set follows live tensors.
- ``--vs diffusers`` builds diffusers' CogVideoXTransformer3DModel (joint text+video attention,
  3-D RoPE) at the same width, depth, heads, text length and video tokens and times both in the
  same process, alternating runs, then prints univid/diffusers ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from univid import speed
from univid.build import build_model
from univid.config import Config, resolve_config
from univid.errors import InputError
from univid.flow import flow_loss, logit_normal
from univid.info import flops_of

# Dense peak FLOP/s from the datasheets (SXM parts), by dtype; other GPUs are measured.
GPU_PEAKS = {
    "H100": {torch.bfloat16: 989e12, torch.float32: 67e12},
    "H200": {torch.bfloat16: 989e12, torch.float32: 67e12},
    "A100": {torch.bfloat16: 312e12, torch.float32: 19.5e12},
}
MB = 2**20


# --- memory -------------------------------------------------------------------------------


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018  (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


def malloc_mode(measuring: bool) -> None:
    """glibc: while measuring memory, serve blocks >= 1 MiB by mmap and trim what is freed, so
    the resident set follows live tensors; while timing, keep freed blocks (threshold 32 MiB,
    the most glibc's own adaptive threshold reaches) so steps do not pay for page faults."""
    libc = _libc()
    if libc is not None:
        size = 1 << 20 if measuring else 32 << 20
        libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, size if measuring else 64 << 20)  # M_TRIM_THRESHOLD


def _status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field_name} in /proc/self/status")


@contextlib.contextmanager
def step_peak(device: torch.device) -> Iterator[dict]:
    """Measures the most memory the block allocates above what was resident when it began."""
    out: dict = {}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out["step_peak_mb"] = (torch.cuda.max_memory_allocated(device) - before) / MB
        return
    malloc_mode(measuring=True)
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    try:
        before = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        before = None
    try:
        yield out
    finally:
        malloc_mode(measuring=False)
    out["step_peak_mb"] = None if before is None else (_status_kb("VmHWM") - before) / 1024


def tensor_mb(tensors: Iterator[torch.Tensor]) -> float:
    """Bytes of distinct tensors (shared storage counted once), in MiB."""
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / MB


def state_tensors(model: nn.Module, optimizer: torch.optim.Optimizer | None):
    yield from model.parameters()
    yield from model.buffers()
    if optimizer is not None:
        for state in optimizer.state.values():
            yield from (v for v in state.values() if isinstance(v, torch.Tensor) and v.ndim)


# --- device peak -------------------------------------------------------------------------


def device_peak(device: torch.device, dtype: torch.dtype, n: int = 4096) -> tuple[float, str]:
    """Peak FLOP/s for ``dtype``: datasheet for known GPUs, else the best of timed n x n matmuls."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAKS.items():
            if key in name and dtype in peaks:
                return peaks[dtype], f"datasheet ({name})"
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(6):
        start = _now(device)
        a @ b
        best = min(best, _now(device) - start)
    return 2 * n**3 / best, f"measured ({n}x{n} matmul, best of 6)"


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# --- the steps ---------------------------------------------------------------------------


@dataclass
class Shape:
    """Synthetic inputs of one size: batch, video (C, T, H, W) and caption length."""

    batch: int
    channels: int
    frames: int
    height: int
    width: int
    text_len: int
    text_dim: int
    patch: tuple[int, int, int]

    @property
    def video_tokens(self) -> int:
        return math.prod(n // p for n, p in zip((self.frames, self.height, self.width), self.patch))

    @property
    def tokens(self) -> int:
        return self.video_tokens + self.text_len


@dataclass
class Runner:
    """One model behind a common interface: ``forward(x, t, text)`` with x (B, C, T, H, W)."""

    name: str
    model: nn.Module
    forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    settings: dict = field(default_factory=dict)


def univid_runner(cfg: Config, device: torch.device) -> Runner:
    model = build_model(cfg.model).to(device)
    _perturb(model)
    return Runner("univid", model, lambda x, t, text: model(x, t, text, None))


def _perturb(model: nn.Module) -> None:
    """Give the zero-initialised gates and heads small values so every path does real work."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 1 and not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=gen).to(p) * 0.02)


def diffusers_runner(cfg: Config, shape: Shape, device: torch.device) -> Runner:
    """CogVideoXTransformer3DModel with univid's width, depth, heads, caption length, patch and
    so the same video tokens; 3-D RoPE like univid (its tables are built once, outside the step)."""
    try:
        from diffusers import CogVideoXTransformer3DModel
        from diffusers.models.embeddings import get_3d_rotary_pos_embed
    except ImportError:
        raise InputError("--vs diffusers needs diffusers: pip install diffusers") from None
    m = cfg.model
    pt, ph, pw = m.patch
    if ph != pw:
        raise InputError(f"--vs diffusers needs a square spatial patch, got {m.patch}")
    model = CogVideoXTransformer3DModel(
        num_attention_heads=m.heads,
        attention_head_dim=m.width // m.heads,
        in_channels=shape.channels,
        out_channels=shape.channels,
        time_embed_dim=m.width,
        text_embed_dim=shape.text_dim,
        num_layers=m.depth,
        sample_width=shape.width,
        sample_height=shape.height,
        sample_frames=shape.frames,
        patch_size=ph,
        patch_size_t=pt if pt > 1 else None,
        temporal_compression_ratio=1,
        max_text_seq_length=shape.text_len,
        use_rotary_positional_embeddings=True,
    ).to(device)
    _perturb(model)
    grid = (shape.height // ph, shape.width // pw)
    cos, sin = get_3d_rotary_pos_embed(
        m.width // m.heads, ((0, 0), grid), grid, shape.frames // pt, device=device
    )

    def forward(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        out = model(
            x.transpose(1, 2), text, t * 1000, image_rotary_emb=(cos, sin), return_dict=False
        )[0]
        return out.transpose(1, 2)

    return Runner("diffusers", model, forward)


def make_inputs(shape: Shape, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    video = (shape.batch, shape.channels, shape.frames, shape.height, shape.width)
    return {
        "x": torch.randn(video, generator=gen).to(device),
        "noise": torch.randn(video, generator=gen).to(device),
        "t": logit_normal(shape.batch, generator=gen).to(device),
        "text": torch.randn(shape.batch, shape.text_len, shape.text_dim, generator=gen).to(device),
    }


def train_step_fn(runner: Runner, inputs: dict, device: torch.device, amp: torch.dtype | None):
    """forward + rectified-flow loss + backward + AdamW step; returns (step, optimizer)."""
    params = [p for p in runner.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    x, noise, t, text = inputs["x"], inputs["noise"], inputs["t"], inputs["text"]

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = flow_loss(lambda xt, tt: runner.forward(xt, tt, text), x, noise, t)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, optimizer


def sample_step_fn(runner: Runner, inputs: dict, device: torch.device, amp: torch.dtype | None):
    """One guided Euler step: both guidance branches in one forward of batch 2B."""
    x, t, text = inputs["noise"], inputs["t"], inputs["text"]
    text_both = torch.cat([text, torch.zeros_like(text)])

    @torch.no_grad()
    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = runner.forward(torch.cat([x, x]), torch.cat([t, t]), text_both).float()
            v_cond, v_uncond = out.chunk(2)
        return x - 0.04 * (v_uncond + 4.0 * (v_cond - v_uncond))

    return step, None


def time_step(step: Callable[[], object], device: torch.device, repeats: int, warmup: int):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = _now(device)
        step()
        times.append(_now(device) - start)
    return times


# --- one measurement ----------------------------------------------------------------------


@dataclass
class Bench:
    """Shared settings of a bench run; ``emit`` prints a JSON line and keeps it for the report."""

    device: torch.device
    repeats: int
    warmup: int
    rows: list[dict] = field(default_factory=list)
    peaks: dict = field(default_factory=dict)

    def peak(self, dtype: torch.dtype) -> tuple[float, str]:
        if dtype not in self.peaks:
            self.peaks[dtype] = device_peak(self.device, dtype)
        return self.peaks[dtype]

    def emit(self, row: dict) -> dict:
        row = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}
        print(json.dumps(row), flush=True)
        self.rows.append(row)
        return row

    def measure(
        self,
        kind: str,
        runner: Runner,
        shape: Shape,
        amp: torch.dtype | None = None,
        backend: str = "auto",
        repeats: int | None = None,
        flops: bool = True,
        label: str | None = None,
        **extra: object,
    ) -> dict:
        """Time, memory, FLOPs and MFU of one step kind ('train' or 'sample') of ``runner``."""
        inputs = make_inputs(shape, self.device)
        make = train_step_fn if kind == "train" else sample_step_fn
        step, optimizer = make(runner, inputs, self.device, amp)
        row = {
            "bench": label or f"{kind}_step",
            "model": runner.name,
            **runner.settings,
            "attention": backend,
            "precision": "bf16" if amp else "fp32",
            "batch": shape.batch,
            "tokens": shape.tokens,
            "video_tokens": shape.video_tokens,
            "text_len": shape.text_len,
            **extra,
        }
        try:
            with speed.attention(runner.model, backend):
                start = _now(self.device)
                step()  # first call: compiles, allocates optimizer state
                row["first_step_s"] = _now(self.device) - start
                times = time_step(step, self.device, repeats or self.repeats, self.warmup - 1)
                with step_peak(self.device) as mem:
                    step()
                counted = flops_of(step) if flops else None
        except (RuntimeError, InputError) as exc:  # e.g. a kernel that cannot take the inputs
            return self.emit({**row, "error": " ".join(str(exc).split())[:200]})
        median = statistics.median(times)
        state = tensor_mb(state_tensors(runner.model, optimizer))
        peak_flops, peak_source = self.peak(amp or torch.float32)
        row.update(
            median_s=median,
            min_s=min(times),
            repeats=len(times),
            tokens_per_s=shape.batch * shape.tokens * (2 if kind == "sample" else 1) / median,
            state_mb=state,
            peak_mb=None if mem["step_peak_mb"] is None else state + mem["step_peak_mb"],
        )
        if counted:
            row.update(
                flops=counted,
                gflop=counted / 1e9,
                achieved_tflops=counted / median / 1e12,
                mfu=counted / median / peak_flops,
                device_peak_tflops=peak_flops / 1e12,
                peak_source=peak_source,
            )
        return self.emit(row)


# --- the suites -----------------------------------------------------------------------------


def bench_shape(cfg: Config, args: argparse.Namespace) -> Shape:
    m = cfg.model
    shape = Shape(
        batch=args.batch,
        channels=m.in_channels,
        frames=args.frames,
        height=args.height,
        width=args.width,
        text_len=args.text_len,
        text_dim=m.text_dim,
        patch=m.patch,
    )
    for name, n, p in zip(
        ("frames", "height", "width"), (args.frames, args.height, args.width), m.patch
    ):
        if n % p:
            raise InputError(f"--{name} {n} is not a multiple of the patch size {p}")
    return shape


def environment(device: torch.device) -> dict:
    env = {
        "bench": "environment",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        import diffusers

        env["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    return env


def run_suite(bench: Bench, cfg: Config, shape: Shape, suites: set[str]) -> None:
    device = bench.device
    fp32, bf16 = torch.float32, torch.bfloat16
    for dtype in (fp32, bf16):
        peak, source = bench.peak(dtype)
        bench.emit(
            {
                "bench": "device_peak",
                "dtype": str(dtype)[6:],
                "tflops": peak / 1e12,
                "source": source,
            }
        )
    runner = univid_runner(cfg, device)
    runner.settings = {"compiled": False}
    amp_best = bf16 if device.type == "cuda" else None
    if "steps" in suites:
        for kind in ("train", "sample"):
            bench.measure(kind, runner, shape, amp=amp_best)
    if "attention" in suites:
        backends = ["flash", "math", "naive"] + (
            ["efficient", "cudnn"] if device.type == "cuda" else []
        )
        for backend in backends:
            for kind in ("train", "sample"):
                bench.measure(kind, runner, shape, amp=amp_best, backend=backend)
    if "precision" in suites:
        for amp in (None, bf16):
            for kind in ("train", "sample"):
                bench.measure(kind, runner, shape, amp=amp)
    if "checkpointing" in suites:
        ckpt = univid_runner(cfg, device)
        speed.prepare_blocks(ckpt.model, checkpointing=True, compile_blocks=False)
        ckpt.settings = {"compiled": False, "checkpointing": True}
        bench.measure("train", ckpt, shape, amp=amp_best)
    if "quant" in suites:
        for mode in ("none", "int8-weight", "int8-dynamic"):
            quantized = univid_runner(cfg, device)
            speed.quantize(quantized.model, mode)
            quantized.settings = {"compiled": False, "quantization": mode}
            bench.measure("sample", quantized, shape, amp=amp_best, flops=mode == "none")
    if "compile" in suites:
        compiled = univid_runner(cfg, device)
        speed.prepare_blocks(compiled.model, checkpointing=False, compile_blocks=True)
        compiled.settings = {"compiled": True}
        for kind in ("train", "sample"):
            bench.measure(kind, runner, shape, amp=amp_best)
            bench.measure(kind, compiled, shape, amp=amp_best)


def token_sweep(bench: Bench, cfg: Config, args: argparse.Namespace) -> None:
    """Sampling-step peak memory and time from 256 to 16k tokens, SDPA vs naive attention."""
    sweep_cfg = resolve_config(args.size, [f"model.depth={args.sweep_depth}"])
    runner = univid_runner(sweep_cfg, bench.device)
    m = sweep_cfg.model
    pt, ph, pw = m.patch
    for tokens in (t for t in SWEEP_TOKENS if t <= args.sweep_max_tokens):
        frames = 4 if int(math.log2(tokens)) % 2 == 0 else 8  # latent frames; a square grid
        side = math.isqrt(tokens // frames)
        shape = Shape(1, m.in_channels, frames * pt, side * ph, side * pw, 1, m.text_dim, m.patch)
        for backend in ("auto", "naive"):
            scores_gb = 3 * 2 * m.heads * shape.tokens**2 * 4 / 2**30  # ~3 copies, batch 2
            if backend == "naive" and scores_gb > args.sweep_max_gb:
                bench.emit(
                    {
                        "bench": "sweep",
                        "attention": backend,
                        "tokens": shape.tokens,
                        "skipped": f"naive attention would need ~{scores_gb:.0f} GB",
                    }
                )
                continue
            bench.measure(
                "sample",
                runner,
                shape,
                backend=backend,
                repeats=1,
                flops=False,
                label="sweep",
                depth=m.depth,
            )


def vs_diffusers(bench: Bench, cfg: Config, shape: Shape, args: argparse.Namespace) -> None:
    """univid and diffusers' CogVideoX transformer at the same size, alternating runs."""
    device = bench.device
    amp = torch.bfloat16 if device.type == "cuda" else None
    ours, theirs = univid_runner(cfg, device), diffusers_runner(cfg, shape, device)
    params = {r.name: sum(p.numel() for p in r.model.parameters()) for r in (ours, theirs)}
    bench.emit({"bench": "vs_diffusers_models", "params": params, "tokens": shape.tokens})
    variants = [("eager", False)] + ([("compiled", True)] if args.vs_compile else [])
    for label, compile_blocks in variants:
        if compile_blocks:
            speed.prepare_blocks(ours.model, checkpointing=False, compile_blocks=True)
            speed.use_compile_cache()
            for block in theirs.model.transformer_blocks:
                block.compile()
        for kind in ("train", "sample"):
            rows = {}
            for runner in (ours, theirs):  # memory, FLOPs and a first timing, one at a time
                runner.settings = {"compiled": compile_blocks, "vs": "diffusers"}
                rows[runner.name] = bench.measure(kind, runner, shape, amp=amp, repeats=1)
            inputs = make_inputs(shape, device)
            make = train_step_fn if kind == "train" else sample_step_fn
            steps = {r.name: make(r, inputs, device, amp)[0] for r in (ours, theirs)}
            for name in steps:  # optimizer state allocated, caches warm
                steps[name]()
            times = {name: [] for name in steps}
            for _ in range(args.repeats):  # alternate: drifts in machine speed hit both
                for name, step in steps.items():
                    start = _now(device)
                    step()
                    times[name].append(_now(device) - start)
            med = {name: statistics.median(ts) for name, ts in times.items()}
            low = {name: min(ts) for name, ts in times.items()}
            mem = {name: rows[name].get("peak_mb") for name in rows}
            bench.emit(
                {
                    "bench": "vs_diffusers",
                    "step": kind,
                    "variant": label,
                    "precision": "bf16" if amp else "fp32",
                    "tokens": shape.tokens,
                    "batch": shape.batch,
                    "repeats": args.repeats,
                    "univid_median_s": med["univid"],
                    "diffusers_median_s": med["diffusers"],
                    "univid_min_s": low["univid"],
                    "diffusers_min_s": low["diffusers"],
                    "speedup_median": med["diffusers"] / med["univid"],
                    "speedup_min": low["diffusers"] / low["univid"],
                    "univid_peak_mb": mem["univid"],
                    "diffusers_peak_mb": mem["diffusers"],
                    "memory_ratio": (
                        mem["univid"] / mem["diffusers"]
                        if mem["univid"] and mem["diffusers"]
                        else None
                    ),
                }
            )


SWEEP_TOKENS = (256, 512, 1024, 2048, 4096, 8192, 16384)
SUITES = ("steps", "attention", "precision", "checkpointing", "quant", "compile", "sweep")


def run_bench(args: argparse.Namespace) -> int:
    """Run the chosen suites, print JSON lines, and write the report when asked."""
    from univid.pipeline import pick_device

    if args.from_jsonl:  # only render a report from an earlier run's lines
        if not args.report:
            raise InputError("--from-jsonl needs --report PATH")
        source = Path(args.from_jsonl)
        try:
            rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read bench lines from {source}: {exc}") from None
        render_report(rows, Path(args.report), "univid " + " ".join(args.argv))
        return 0
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    suites = set(SUITES if args.suites == "all" else args.suites.split(","))
    unknown = suites - set(SUITES)
    if unknown:
        raise InputError(
            f"unknown suite(s) {', '.join(sorted(unknown))}: choose from {', '.join(SUITES)}"
        )
    malloc_mode(measuring=False)
    cfg = resolve_config(args.size, list(args.overrides))
    shape = bench_shape(cfg, args)
    bench = Bench(device, args.repeats, args.warmup)
    bench.emit({**environment(device), "size": args.size, "tokens": shape.tokens})
    if args.vs == "diffusers":
        vs_diffusers(bench, cfg, shape, args)
    if suites - {"sweep"}:
        run_suite(bench, cfg, shape, suites)
    if "sweep" in suites:
        token_sweep(bench, cfg, args)
    if args.jsonl:
        Path(args.jsonl).write_text("".join(json.dumps(r) + "\n" for r in bench.rows))
    if args.report:
        render_report(bench.rows, Path(args.report), "univid " + " ".join(args.argv))
    return 0


# --- the report -------------------------------------------------------------------------------


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _variant(row: dict) -> str:
    parts = ["compiled" if row.get("compiled") else "eager", row.get("precision", "fp32")]
    if row.get("attention", "auto") != "auto":
        parts.append(f"attention={row['attention']}")
    if row.get("checkpointing"):
        parts.append("checkpointing")
    if row.get("quantization", "none") != "none":
        parts.append(row["quantization"])
    return ", ".join(parts)


def render_report(rows: list[dict], path: Path, command: str) -> None:
    """Markdown tables of a bench run (and the token-sweep plot next to it, as PNG)."""
    env = next((r for r in rows if r["bench"] == "environment"), {})
    lines = [
        f"<!-- written by `{command}`; edit the command, not this file -->",
        "",
        f"Device: **{env.get('device', '?')}** ({env.get('cpu', '')}, {env.get('threads')} "
        f"threads, {env.get('capability', '')}); torch {env.get('torch')}, diffusers "
        f"{env.get('diffusers', '—')}. Size **{env.get('size')}**, {env.get('tokens')} tokens "
        "per video (video patches + caption).",
        "",
    ]
    peaks = [r for r in rows if r["bench"] == "device_peak"]
    if peaks:
        lines += ["| device peak | TFLOP/s | source |", "|---|---|---|"]
        lines += [f"| {r['dtype']} | {_fmt(r['tflops'])} | {r['source']} |" for r in peaks]
        lines.append("")
    steps = [r for r in rows if r["bench"] in ("train_step", "sample_step") and not r.get("vs")]
    if steps:
        lines += [
            "### Train and sampling steps",
            "",
            "| step | variant | median s | min s | tokens/s | peak MB | GFLOP | MFU | first s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in steps:
            if "error" in r:
                lines.append(f"| {r['bench'][:-5]} | {_variant(r)} | failed: {r['error']} |||||||")
                continue
            mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") else "—"
            lines.append(
                f"| {r['bench'][:-5]} | {_variant(r)} | {_fmt(r['median_s'])} | "
                f"{_fmt(r['min_s'])} | {_fmt(r['tokens_per_s'])} | {_fmt(r['peak_mb'])} | "
                f"{_fmt(r.get('gflop'))} | {mfu} | {_fmt(r['first_step_s'])} |"
            )
        lines.append("")
    versus = [r for r in rows if r["bench"] == "vs_diffusers"]
    if versus:
        models = next((r for r in rows if r["bench"] == "vs_diffusers_models"), {})
        params = models.get("params", {})
        lines += [
            "### univid against diffusers' CogVideoXTransformer3DModel",
            "",
            "Same width, depth, heads, caption length and video tokens; parameters: univid "
            f"{params.get('univid', 0) / 1e6:.1f} M, diffusers "
            f"{params.get('diffusers', 0) / 1e6:.1f} M. Runs alternate in one process; "
            "speed-up = diffusers time / univid time.",
            "",
            "| step | variant | univid median s | diffusers median s | speed-up (median) | "
            "speed-up (min) | univid peak MB | diffusers peak MB | memory ratio |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in versus:
            lines.append(
                f"| {r['step']} | {r['variant']}, {r['precision']} | "
                f"{_fmt(r['univid_median_s'])} | {_fmt(r['diffusers_median_s'])} | "
                f"**{r['speedup_median']:.2f}x** | "
                f"{r['speedup_min']:.2f}x | {_fmt(r['univid_peak_mb'])} | "
                f"{_fmt(r['diffusers_peak_mb'])} | {_fmt(r['memory_ratio'])} |"
            )
        lines.append("")
    sweep = [r for r in rows if r["bench"] == "sweep"]
    if sweep:
        plot = path.with_name(path.stem + "-memory.png")
        lines += [
            "### Peak memory against tokens (sampling step, batch 2 for guidance)",
            "",
            f"![peak memory against tokens]({plot.name})",
            "",
            "| tokens | SDPA peak MB | SDPA s | naive peak MB | naive s |",
            "|---|---|---|---|---|",
        ]
        by_tokens: dict[int, dict] = {}
        for r in sweep:
            by_tokens.setdefault(r["tokens"], {})[r["attention"]] = r
        for tokens, pair in sorted(by_tokens.items()):
            fast, naive = pair.get("auto", {}), pair.get("naive", {})
            naive_cells = (
                f"{_fmt(naive.get('peak_mb'))} | {_fmt(naive.get('median_s'))}"
                if "skipped" not in naive
                else f"skipped: {naive['skipped']} | —"
            )
            lines.append(
                f"| {tokens} | {_fmt(fast.get('peak_mb'))} | {_fmt(fast.get('median_s'))} | "
                f"{naive_cells} |"
            )
        lines.append("")
        for key, label in (("auto", "SDPA"), ("naive", "naive")):
            growth = _growth(by_tokens, key)
            if growth:
                (t1, t2), exponent = growth
                lines.append(
                    f"- {label}: step memory above the weights grows as tokens^{exponent:.2f} "
                    f"from {t1} to {t2} tokens (1 = linear, 2 = quadratic)."
                )
        lines.append("")
        _plot_sweep(by_tokens, plot)
    path.write_text("\n".join(lines), encoding="utf-8")


def _sweep_points(by_tokens: dict[int, dict], key: str) -> list[tuple[int, float]]:
    """(tokens, step memory above the weights in MB) of one attention path, by tokens."""
    return [
        (tokens, pair[key]["peak_mb"] - pair[key]["state_mb"])
        for tokens, pair in sorted(by_tokens.items())
        if key in pair and pair[key].get("peak_mb") is not None
    ]


def _growth(by_tokens: dict[int, dict], key: str) -> tuple[tuple[int, int], float] | None:
    """Exponent k of memory ~ tokens^k between the two largest measured sizes."""
    points = _sweep_points(by_tokens, key)
    if len(points) < 2:
        return None
    (t1, m1), (t2, m2) = points[-2:]
    return (t1, t2), math.log(m2 / m1) / math.log(t2 / t1)


def _plot_sweep(by_tokens: dict[int, dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: {path.name} not drawn", flush=True)
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, marker in (
        ("auto", "SDPA (fused, no N×N scores)", "o"),
        ("naive", "naive softmax(QKᵀ)V", "s"),
    ):
        points = _sweep_points(by_tokens, key)
        if points:
            ax.plot(*zip(*points), marker=marker, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("tokens in the stream")
    ax.set_ylabel("step memory above weights (MB)")
    ax.set_title("Sampling-step memory: linear with SDPA, quadratic naive")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
