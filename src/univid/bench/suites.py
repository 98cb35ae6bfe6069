"""The bench's suites and :func:`run_bench`, which runs those a :class:`BenchSettings` names."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from univid import speed
from univid.bench.measure import Bench, environment, malloc_mode
from univid.bench.report import render_report
from univid.bench.settings import BenchSettings
from univid.bench.steps import Runner, Shape, univid_runner
from univid.bench.versus import vs_diffusers
from univid.config import Config, resolve_config
from univid.device import autocast_dtype
from univid.errors import InputError

SWEEP_TOKENS = (256, 512, 1024, 2048, 4096, 8192, 16384)
KINDS = ("train", "sample")


def bench_shape(cfg: Config, settings: BenchSettings) -> Shape:
    """The synthetic inputs the settings ask for, checked against the model's patch."""
    m = cfg.model
    sizes = {"frames": settings.frames, "height": settings.height, "width": settings.width}
    for (name, n), p in zip(sizes.items(), m.patch):
        if n % p:
            raise InputError(f"--{name} {n} is not a multiple of the patch size {p}")
    return Shape(
        batch=settings.batch,
        channels=m.in_channels,
        text_len=settings.text_len,
        text_dim=m.text_dim,
        patch=m.patch,
        **sizes,
    )


def run_suite(bench: Bench, cfg: Config, shape: Shape, suites: set[str]) -> None:
    """Every suite but the sweep: device peaks, then the univid model's step variants."""
    device = bench.device
    for dtype in (torch.float32, torch.bfloat16):
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
    amp_best = autocast_dtype("auto", device)  # what training and sampling use by default
    if "steps" in suites:
        for kind in KINDS:
            bench.measure(kind, runner, shape, amp=amp_best)
    if "attention" in suites:
        backends = ["flash", "math", "naive"] + (
            ["efficient", "cudnn"] if device.type == "cuda" else []
        )
        for backend in backends:
            for kind in KINDS:
                bench.measure(kind, runner, shape, amp=amp_best, backend=backend)
    if "precision" in suites:
        for amp in (None, torch.bfloat16):
            for kind in KINDS:
                bench.measure(kind, runner, shape, amp=amp)
    if "checkpointing" in suites:
        ckpt = _variant(cfg, device, {"compiled": False, "checkpointing": True})
        speed.prepare_blocks(ckpt.model, checkpointing=True, compile_blocks=False)
        bench.measure("train", ckpt, shape, amp=amp_best)
    if "quant" in suites:
        for mode in speed.QUANTIZATION:
            quantized = _variant(cfg, device, {"compiled": False, "quantization": mode})
            speed.quantize(quantized.model, mode)
            bench.measure("sample", quantized, shape, amp=amp_best, flops=mode == "none")
    if "compile" in suites:
        compiled = _variant(cfg, device, {"compiled": True})
        speed.prepare_blocks(compiled.model, checkpointing=False, compile_blocks=True)
        for kind in KINDS:
            bench.measure(kind, runner, shape, amp=amp_best)
            bench.measure(kind, compiled, shape, amp=amp_best)


def _variant(cfg: Config, device: torch.device, settings: dict) -> Runner:
    runner = univid_runner(cfg, device)
    runner.settings = settings
    return runner


def token_sweep(bench: Bench, settings: BenchSettings) -> None:
    """Sampling-step peak memory and time from 256 to 16k tokens, SDPA vs naive attention."""
    sweep_cfg = resolve_config(settings.size, [f"model.depth={settings.sweep_depth}"])
    runner = univid_runner(sweep_cfg, bench.device)
    m = sweep_cfg.model
    pt, ph, pw = m.patch
    for tokens in (t for t in SWEEP_TOKENS if t <= settings.sweep_max_tokens):
        frames = 4 if int(math.log2(tokens)) % 2 == 0 else 8  # latent frames; a square grid
        side = math.isqrt(tokens // frames)
        shape = Shape(1, m.in_channels, frames * pt, side * ph, side * pw, 1, m.text_dim, m.patch)
        for backend in ("auto", "naive"):
            scores_gb = 3 * 2 * m.heads * shape.tokens**2 * 4 / 2**30  # ~3 copies, batch 2
            if backend == "naive" and scores_gb > settings.sweep_max_gb:
                skipped = f"naive attention would need ~{scores_gb:.0f} GB"
                row = {"bench": "sweep", "attention": backend, "tokens": shape.tokens}
                bench.emit({**row, "skipped": skipped})
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


def read_rows(source: Path) -> list[dict]:
    """The JSON lines of an earlier run (``--jsonl``)."""
    from univid.files import JSON_LIMIT, read_user_bytes

    text = read_user_bytes(source, JSON_LIMIT, "bench lines").decode("utf-8", "replace")
    try:
        return [json.loads(line) for line in text.split("\n") if line.strip()]
    except (ValueError, RecursionError) as exc:
        raise InputError(f"cannot read bench lines from {source}: {exc}") from None


def run_bench(settings: BenchSettings) -> int:
    """Run the chosen suites, print JSON lines, and write the report when asked."""
    from univid.device import pick_device

    if settings.from_jsonl is not None:  # only render a report from an earlier run's lines
        render_report(read_rows(settings.from_jsonl), settings.report, settings.command_line)
        return 0
    device = pick_device(settings.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    suites = set(settings.suites)
    malloc_mode(measuring=False)
    cfg = resolve_config(settings.size, list(settings.overrides))
    shape = bench_shape(cfg, settings)
    bench = Bench(device, settings.repeats, settings.warmup)
    bench.emit({**environment(device), "size": settings.size, "tokens": shape.tokens})
    if settings.vs == "diffusers":
        vs_diffusers(bench, cfg, shape, settings.vs_compile)
    if suites - {"sweep"}:
        run_suite(bench, cfg, shape, suites)
    if "sweep" in suites:
        token_sweep(bench, settings)
    if settings.jsonl is not None:
        settings.jsonl.write_text("".join(json.dumps(r) + "\n" for r in bench.rows))
    if settings.report is not None:
        render_report(bench.rows, settings.report, settings.command_line)
    return 0
