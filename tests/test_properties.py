"""Property tests: whatever configs and prompts users throw at univid, the outcome is a result
or one clean line with exit code 2, never a traceback."""

from __future__ import annotations

import tempfile
from dataclasses import fields
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from univid.cli import main
from univid.config import SECTIONS, resolve_config
from univid.errors import ConfigError
from univid.pipeline import Pipeline

KEYS = [f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in fields(cls)]
WORDS = ["true", "false", "dit", "encoder", "ddp", "fsdp", "cpu", "cuda", "2,4,4", "1,1,1"]
WORDS += ["", "0x10", "1e3", "-0", "nan", "inf", "-inf", "1,2", "a,b,c", "None", "[1]"]
values = st.one_of(
    st.integers(-10, 400).map(str),
    st.integers().map(str),
    st.floats().map(repr),
    st.sampled_from(WORDS),
    st.text(max_size=30),
)
keys = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda k: k[:-1]),  # typos
    st.text(max_size=20),
)
overrides = st.one_of(st.builds(lambda k, v: f"{k}={v}", keys, values), st.text(max_size=20))


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """The exit code of ``univid ARGV`` (main returns argparse's usage errors too) and stderr."""
    code = main(argv)
    return code, capsys.readouterr().err


def assert_clean(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err, err
    if code == 2:  # one error line (progress bars may come before it), never a usage block
        lines = err.strip().splitlines()
        assert lines[-1].startswith("univid: error:"), err
        assert sum(line.startswith("univid: error:") for line in lines) == 1, err
        assert not any(line.startswith("usage:") for line in lines), err


@settings(max_examples=400, deadline=None)
@given(items=st.lists(overrides, max_size=6))
def test_the_config_loader_builds_or_raises_a_config_error(items):
    try:
        resolve_config("tiny", items)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=st.lists(overrides, max_size=4),
    preset=st.sampled_from(["tiny", "S", "shapes-tiny", "nope"]),
)
def test_univid_info_with_random_overrides_exits_cleanly(items, preset, capsys):
    assert_clean(*run(["info", "--model", preset, *items, "--json"], capsys))


@pytest.fixture(scope="module")
def bundled() -> Pipeline:
    return Pipeline.from_pretrained("shapes-tiny", device="cpu")


prompts = st.one_of(
    st.text(max_size=200),
    st.integers(1_990, 12_000).map(lambda n: "a" * n),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["", "   ", "\x00", "red\x1bcircle", "a red circle moving right", "-x"]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prompt=prompts)
def test_univid_generate_with_random_prompts_exits_cleanly(prompt, bundled, capsys):
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(Pipeline, "from_pretrained", return_value=bundled),
    ):
        out = str(Path(tmp) / "video.gif")
        code, err = run(["generate", prompt, "--out", out, "--steps", "1"], capsys)
        assert_clean(code, err)
        assert (code == 0) == Path(out).is_file()
