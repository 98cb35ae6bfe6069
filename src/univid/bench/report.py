"""The bench's Markdown report: tables of its JSON lines and the token-sweep memory plot."""

from __future__ import annotations

import math
from pathlib import Path


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
    lines += _peaks_table(rows) + _steps_table(rows) + _versus_table(rows)
    lines += _sweep_section(rows, path.with_name(path.stem + "-memory.png"))
    path.write_text("\n".join(lines), encoding="utf-8")


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


def _peaks_table(rows: list[dict]) -> list[str]:
    peaks = [r for r in rows if r["bench"] == "device_peak"]
    if not peaks:
        return []
    lines = ["| device peak | TFLOP/s | source |", "|---|---|---|"]
    lines += [f"| {r['dtype']} | {_fmt(r['tflops'])} | {r['source']} |" for r in peaks]
    return [*lines, ""]


def _steps_table(rows: list[dict]) -> list[str]:
    steps = [r for r in rows if r["bench"] in ("train_step", "sample_step") and not r.get("vs")]
    if not steps:
        return []
    lines = [
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
    return [*lines, ""]


def _versus_table(rows: list[dict]) -> list[str]:
    versus = [r for r in rows if r["bench"] == "vs_diffusers"]
    if not versus:
        return []
    models = next((r for r in rows if r["bench"] == "vs_diffusers_models"), {})
    params = models.get("params", {})
    lines = [
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
    return [*lines, "", *_best_of_each(versus)]


def _best_of_each(versus: list[dict]) -> list[str]:
    """Each model at its own fastest setting (precision x compile), per step."""
    lines = []
    for step in ("train", "sample"):
        rows = [r for r in versus if r["step"] == step]
        if len(rows) < 2:
            continue
        ours = min(rows, key=lambda r: r["univid_median_s"])
        theirs = min(rows, key=lambda r: r["diffusers_median_s"])
        ratio = theirs["diffusers_median_s"] / ours["univid_median_s"]
        lines.append(
            f"- {step}, each at its fastest setting: univid {ours['variant']}, "
            f"{ours['precision']} {_fmt(ours['univid_median_s'])} s against diffusers "
            f"{theirs['variant']}, {theirs['precision']} {_fmt(theirs['diffusers_median_s'])} s: "
            f"**{ratio:.2f}x**."
        )
    return [*lines, ""] if lines else []


def _sweep_section(rows: list[dict], plot: Path) -> list[str]:
    """The token sweep's table and growth exponents; draws the plot at ``plot``."""
    by_tokens: dict[int, dict] = {}
    for r in rows:
        if r["bench"] == "sweep":
            by_tokens.setdefault(r["tokens"], {})[r["attention"]] = r
    if not by_tokens:
        return []
    lines = [
        "### Peak memory against tokens (sampling step, batch 2 for guidance)",
        "",
        f"![peak memory against tokens]({plot.name})",
        "",
        "| tokens | SDPA peak MB | SDPA s | naive peak MB | naive s |",
        "|---|---|---|---|---|",
    ]
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
    return lines


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
