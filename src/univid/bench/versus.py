"""``univid bench --vs diffusers``: univid against diffusers' CogVideoXTransformer3DModel (joint
text+video attention, 3-D RoPE) at the same width, depth, heads, text length and video tokens,
timed in the same process with alternating runs; rows carry univid/diffusers ratios."""

from __future__ import annotations

import statistics

import torch

from univid import speed
from univid.bench.measure import Bench, alternate
from univid.bench.steps import Runner, Shape, make_inputs, perturb, step_fn, univid_runner
from univid.config import Config
from univid.device import bf16_units, precision_name
from univid.errors import InputError


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
    perturb(model)
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


def vs_diffusers(bench: Bench, cfg: Config, shape: Shape, vs_compile: bool) -> None:
    """univid and diffusers' CogVideoX transformer at the same size, eager (and compiled), in
    fp32 and, where the device has bf16 matrix units, in bf16 autocast too (on CUDA bf16 only):
    each side's best setting is then the fastest of its rows."""
    device = bench.device
    amps = [torch.bfloat16] if device.type == "cuda" else [None]
    if device.type == "cpu" and bf16_units(device):
        amps.append(torch.bfloat16)
    ours, theirs = univid_runner(cfg, device), diffusers_runner(cfg, shape, device)
    params = {r.name: sum(p.numel() for p in r.model.parameters()) for r in (ours, theirs)}
    bench.emit({"bench": "vs_diffusers_models", "params": params, "tokens": shape.tokens})
    variants = [("eager", False)] + ([("compiled", True)] if vs_compile else [])
    for label, compile_blocks in variants:
        if compile_blocks:
            speed.prepare_blocks(ours.model, checkpointing=False, compile_blocks=True)
            speed.use_compile_cache()
            for block in theirs.model.transformer_blocks:
                block.compile()
        for amp in amps:
            for kind in ("train", "sample"):
                _versus(bench, (ours, theirs), shape, kind, amp, label)


def _versus(
    bench: Bench,
    runners: tuple[Runner, Runner],
    shape: Shape,
    kind: str,
    amp: torch.dtype | None,
    label: str,
) -> None:
    """One row: both models' ``kind`` step in one setting, timed alternately."""
    device, compiled = bench.device, label == "compiled"
    rows = {}
    for runner in runners:  # memory, FLOPs and a first timing, one at a time
        runner.settings = {"compiled": compiled, "vs": "diffusers"}
        rows[runner.name] = bench.measure(kind, runner, shape, amp=amp, repeats=1)
    inputs = make_inputs(shape, device)
    steps = {r.name: step_fn(kind)(r, inputs, device, amp)[0] for r in runners}
    for step in steps.values():  # optimizer state allocated, caches warm
        step()
    times = alternate(steps, bench.repeats, device)
    row = {"bench": "vs_diffusers", "step": kind, "variant": label}
    row |= {"precision": precision_name(amp), "tokens": shape.tokens}
    row |= {"batch": shape.batch, "repeats": bench.repeats}
    bench.emit({**row, **_ratios(times, rows)})


def _ratios(times: dict[str, list[float]], rows: dict[str, dict]) -> dict:
    """Median and min times, peak memory and their diffusers/univid ratios."""
    med = {name: statistics.median(ts) for name, ts in times.items()}
    low = {name: min(ts) for name, ts in times.items()}
    mem = {name: rows[name].get("peak_mb") for name in rows}
    return {
        "univid_median_s": med["univid"],
        "diffusers_median_s": med["diffusers"],
        "univid_min_s": low["univid"],
        "diffusers_min_s": low["diffusers"],
        "speedup_median": med["diffusers"] / med["univid"],
        "speedup_min": low["diffusers"] / low["univid"],
        "univid_peak_mb": mem["univid"],
        "diffusers_peak_mb": mem["diffusers"],
        "memory_ratio": (
            mem["univid"] / mem["diffusers"] if mem["univid"] and mem["diffusers"] else None
        ),
    }
