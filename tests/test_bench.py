"""`univid bench` on a tiny model: every suite runs, FLOPs agree with `univid info`, the token
sweep shows the naive path's N x N memory, and the report renders."""

import json

import pytest

from univid.cli import main
from univid.config import resolve_config
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
