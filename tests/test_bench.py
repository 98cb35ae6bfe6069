"""`univid bench` on a tiny model: every suite runs, FLOPs agree with `univid info`, the token
sweep shows the naive path's N x N memory, and the report renders."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import univid.device
from univid.bench import DEFAULT_SUITES, SUITES, VERSUS, BenchSettings
from univid.bench.settings import settings_from_options
from univid.cli import build_parser, main
from univid.config import resolve_config
from univid.errors import InputError
from univid.info import count_flops, describe

SHAPE = ["--frames", "2", "--height", "8", "--width", "8", "--text-len", "3", "--batch", "2"]


@pytest.fixture(scope="module")
def bench_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    jsonl = out / "bench.jsonl"
    args = ["bench", "--size", "tiny", *SHAPE, "--repeats", "1", "--warmup", "1"]
    args += ["--suites", "steps,attention,precision,checkpointing,sweep", "--device", "cpu"]
    args += ["--sweep-max-tokens", "1024", "--jsonl", str(jsonl), "--report", str(out / "r.md")]
    assert main(args) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return rows, out


def test_steps_are_timed_and_their_flops_match_univid_info(bench_rows):
    rows, _ = bench_rows
    cfg = resolve_config("tiny", [])
    info = describe(cfg, 2, 8, 8, 3)
    train = next(r for r in rows if r["bench"] == "train_step")
    sample = next(r for r in rows if r["bench"] == "sample_step")
    for row in (train, sample):
        assert row["median_s"] > 0 and row["tokens"] == info["tokens"]
        assert 0 < row["mfu"] < 1
        assert row["peak_mb"] >= row["state_mb"] > 0
    # Training counts forward + backward of the batch of 2; sampling one forward of 2 x 2 (on
    # the CPU, whose per-sample linears run in float64, so counted there, not on meta).
    shape = (2, 8, 8, 3)
    assert train["flops"] == count_flops(cfg, *shape, batch=2, backward=True, device="cpu")
    assert sample["flops"] == count_flops(cfg, *shape, batch=4, device="cpu")
    # AdamW's two moments: state = weights + 2 x weights.
    params_mb = info["params"] * 4 / 2**20
    assert train["state_mb"] == pytest.approx(3 * params_mb, rel=1e-3)


def test_every_variant_ran(bench_rows):
    rows, _ = bench_rows
    steps = [r for r in rows if r["bench"] in ("train_step", "sample_step")]
    assert not [r for r in steps if "error" in r]
    assert {r["attention"] for r in steps} >= {"auto", "flash", "math", "naive"}
    assert {r["precision"] for r in steps} == {"fp32", "bf16"}
    assert any(r.get("checkpointing") for r in steps)


def test_sweep_memory_is_quadratic_only_for_naive_attention(bench_rows):
    rows, _ = bench_rows
    sweep = {(r["tokens"], r["attention"]): r for r in rows if r["bench"] == "sweep"}
    assert sorted({t for t, _ in sweep}) == [257, 513, 1025]

    def step_mb(tokens, attention):
        row = sweep[tokens, attention]
        return row["peak_mb"] - row["state_mb"]

    # The naive path holds 2 x heads x N^2 fp32 scores: 16 MB at 1025 tokens for tiny.
    assert step_mb(1025, "naive") > 2 * step_mb(1025, "auto")
    assert step_mb(1025, "naive") > 16


def test_report_has_the_tables_and_the_plot(bench_rows):
    _, out = bench_rows
    report = (out / "r.md").read_text()
    assert "### Train and sampling steps" in report and "### Peak memory against tokens" in report
    assert (out / "r-memory.png").stat().st_size > 1000
    # Rendering again from the JSON lines gives the same tables.
    again = out / "again.md"
    argv = ["bench", "--from-jsonl", str(out / "bench.jsonl"), "--report", str(again)]
    assert main(argv) == 0
    rendered = again.read_text().replace("again-memory.png", "r-memory.png")
    assert rendered.split("\n", 1)[1] == report.split("\n", 1)[1]


def test_bad_suite_is_one_line_error(capsys):
    assert main(["bench", "--suites", "steps,nope", "--size", "tiny"]) == 2
    assert "unknown suite(s) nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("repeats", 0, "bench repeats must be an integer in [1, 100000], got 0"),
        ("frames", -2, "bench frames must be an integer in [1, 8192], got -2"),
        ("threads", -1, "bench threads must be an integer in [0, 256]"),
        ("sweep_max_gb", 0.0, "bench sweep_max_gb must be a number in (0, 1e+06]"),
        ("sweep_max_gb", float("inf"), "bench sweep_max_gb must be a number in (0, 1e+06]"),
        ("suites", ("steps", "nope"), "unknown suite(s) nope: choose from steps, attention"),
        ("suites", (), "no suite chosen"),
        ("suites", "steps", "bench suites must be a tuple of names"),
        ("vs", "flax", "bench vs must be one of diffusers, got 'flax'"),
        ("from_jsonl", Path("rows.jsonl"), "--from-jsonl needs --report PATH"),
    ],
)
def test_bench_settings_reject_bad_values_in_one_line(field, value, message):
    with pytest.raises(InputError) as caught:
        BenchSettings(**{field: value})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bench_settings_from_command_line_options():
    options = {"command": "bench", "suites": "all", "report": "r.md", "overrides": ["a.b=1"]}
    settings = settings_from_options(options, command_line="univid bench --suites all")
    assert settings.suites == SUITES and settings.report == Path("r.md")
    assert settings.overrides == ("a.b=1",) and settings.jsonl is None
    assert settings_from_options({"suites": "steps, sweep"}, "").suites == ("steps", "sweep")


def test_cli_bench_prints_rows(capsys):
    argv = ["bench", "--size", "tiny", "--suites", "sweep", "--sweep-max-tokens", "256"]
    assert main([*argv, "--repeats", "1", "--warmup", "1", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["bench"] == "environment" and rows[0]["size"] == "tiny"
    sweep = [r for r in rows if r["bench"] == "sweep"]
    assert {r["attention"] for r in sweep} == {"auto", "naive"}
    assert all(r["median_s"] > 0 and r["tokens"] == 257 for r in sweep)


def test_cli_parser_takes_the_bench_choices_without_torch():
    code = (
        "import sys; from univid.cli import build_parser; build_parser(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    actions = {a.dest: a for a in _bench_parser()._actions}
    assert tuple(actions["device"].choices) == univid.device.DEVICES
    assert tuple(actions["vs"].choices) == VERSUS
    assert actions["suites"].default == ",".join(DEFAULT_SUITES)


def _bench_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["bench"]


def test_vs_diffusers_runs_both_precisions_where_bf16_is_fast(tmp_path, monkeypatch):
    """On a CPU with bf16 matrix units (mocked) `--vs diffusers` times both models in fp32 and
    bf16 and the report puts each at its fastest setting; without them, fp32 only."""
    for flags, precisions in (("amx_bf16 amx_tile", {"fp32", "bf16"}), ("none", {"fp32"})):
        monkeypatch.setenv("UNIVID_CPU_FLAGS", flags)
        jsonl, report = tmp_path / f"{flags[:4]}.jsonl", tmp_path / f"{flags[:4]}.md"
        args = ["bench", "--size", "tiny", *SHAPE, "--repeats", "1", "--warmup", "1"]
        args += ["--suites", "steps", "--vs", "diffusers", "--device", "cpu"]
        assert main([*args, "--jsonl", str(jsonl), "--report", str(report)]) == 0
        rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
        versus = [r for r in rows if r["bench"] == "vs_diffusers"]
        assert {(r["step"], r["precision"]) for r in versus} == {
            (step, p) for step in ("train", "sample") for p in precisions
        }
        steps = [r for r in rows if r["bench"] in ("train_step", "sample_step") and "vs" not in r]
        assert {r["precision"] for r in steps} == {"bf16" if "bf16" in precisions else "fp32"}
        text = report.read_text()  # with more than one setting, each model at its fastest
        for step in ("train", "sample"):
            line = f"- {step}, each at its fastest setting: univid eager"
            assert (line in text) is (len(precisions) == 2)
