"""Hostile files where univid expects a file: a FIFO, a device, a folder, a symlink loop, an
empty, huge or binary file, a YAML alias bomb, deep nesting, non-string keys, a model folder with
its own Python. Every outcome is a result, one `univid: error:` line with exit 2 or, for a
caption, the clip reported bad with its reason: never a traceback, a hang, a memory blow-up or a
[y/N] prompt.

The CLI-level cases run in a worker subprocess (tests/hostile_worker.py) under a memory limit
(RLIMIT_AS) with stdin closed, each case under an alarm, so a regression shows as a failed test,
not as a stuck or swapping machine."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from univid.config import load_config_file
from univid.data.sources import list_sources
from univid.errors import ConfigError, CorruptFileError, InputError
from univid.files import CAPTION_LIMIT, CONFIG_LIMIT, UnreadableFile, read_json, read_user_bytes

CASE_SECONDS = 20  # each CLI case, in the worker
MEMORY = 3 << 30  # the worker's address-space limit
ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("hostile_worker.py")


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so no handler in univid can swallow it."""


@contextmanager
def deadline(seconds: int):
    def ring(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The classic "billion laughs": a few hundred bytes that expand to width**levels items,
    used where the loader looks at the value (and once repr'd it whole in its message)."""
    lines = ["model:", "  width:", f"  - &a0 [{','.join(['lol'] * width)}]"]
    for k in range(1, levels):
        lines.append(f"  - &a{k} [{','.join([f'*a{k - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


# -- the reader ---------------------------------------------------------------------------------


def test_the_reader_refuses_what_is_not_a_regular_file_without_opening_it(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dir").mkdir()
    (tmp_path / "huge").touch()
    os.truncate(tmp_path / "huge", 2 << 30)  # sparse: costs no disk
    expected = {
        "fifo": "FIFO",
        "zero": "character device",
        "loop": "symlink loop",
        "dir": "folder",
        "missing": "no such file",
        "huge": "over the 1 MiB limit",
    }
    with deadline(10):  # opening the FIFO would block forever
        for name, reason in expected.items():
            with pytest.raises(UnreadableFile, match=reason) as info:
                read_user_bytes(tmp_path / name, CONFIG_LIMIT, "config file")
            assert "\n" not in str(info.value) and str(tmp_path / name) in str(info.value)


def test_the_reader_reads_up_to_its_limit_exactly(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_user_bytes(path, 100, "file") == b"x" * 100
    with pytest.raises(UnreadableFile, match="over the 99 bytes limit"):
        read_user_bytes(path, 99, "file")
    link = tmp_path / "link"
    link.symlink_to(path)  # symlinks to regular files are followed
    assert read_user_bytes(link, 100, "file") == b"x" * 100


def test_read_json_gives_one_corrupt_file_error(tmp_path):
    cases = {
        "deep": "[" * 100_000 + "]" * 100_000,
        "digits": '{"a": ' + "9" * 5000 + "}",
        "list": "[1, 2]",
        "junk": "\xff\xfe",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="latin-1")
        with pytest.raises(CorruptFileError) as info:
            read_json(path)
        assert "\n" not in str(info.value)
    os.mkfifo(tmp_path / "fifo")
    with deadline(10), pytest.raises(CorruptFileError, match="FIFO"):
        read_json(tmp_path / "fifo")


# -- config files -------------------------------------------------------------------------------


def config_error(path: Path) -> str:
    with deadline(10), pytest.raises(ConfigError) as info:
        load_config_file(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert len(path.read_bytes()) < 500
    start = time.perf_counter()
    assert "aliases" in config_error(path)
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize(
    "text, words",
    [
        ("1: 2\n", "names must be strings"),
        ("null: x\n", "names must be strings"),
        ("model:\n  1: 2\n", "keys must be strings"),
        ("model:\n  null: 2\n", "keys must be strings"),
        ("? [a]\n: b\n", "unhashable"),
        ("model: {? {a: 1} : 2}\n", "unhashable"),
        ("- model\n", "mapping of sections"),
        ("0\n", "mapping of sections"),
        ("false\n", "mapping of sections"),
        ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper"),
        ("a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n", "nested deeper"),
        ("model:\n  width: " + "9" * 5000 + "\n", "bad value"),
        ("model:\n  backbone: " + "x" * 200_000 + "\n", "is invalid"),
        ("model:\n  ? " + "k" * 200_000 + "\n  : 1\n", "unknown config key"),
        ("? " + "x" * 200_000 + "\n: 1\n", "unknown config section"),
        ("model: !!python/object/apply:os.system [true]\n", "not valid YAML"),
    ],
)
def test_hostile_yaml_configs_give_one_short_line(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert words in config_error(path)


@pytest.mark.parametrize(
    "text, words",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("[1]", "mapping of sections, not list"),
        ("3", "mapping of sections, not int"),
        ('"model"', "mapping of sections, not str"),
        ('{"model": {"width": ' + "9" * 5000 + "}}", "not valid JSON"),
        ('{"model": {"backbone": "' + "x" * 200_000 + '"}}', "is invalid"),
        ("", "not valid JSON"),
    ],
)
def test_hostile_json_configs_give_one_short_line(tmp_path, text, words):
    path = tmp_path / "c.json"
    path.write_text(text)
    assert words in config_error(path)


def test_a_config_that_is_a_fifo_device_or_loop_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    (tmp_path / "huge.json").touch()
    os.truncate(tmp_path / "huge.json", 2 << 30)
    assert "FIFO" in config_error(tmp_path / "fifo.yaml")
    assert "character device" in config_error(tmp_path / "zero.json")
    assert "symlink loop" in config_error(tmp_path / "loop.yaml")
    assert "over the 1 MiB limit" in config_error(tmp_path / "huge.json")


def test_a_bom_and_an_empty_yaml_still_load(tmp_path):
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf{"train": {"steps": 3}}')
    assert load_config_file(tmp_path / "bom.json").train.steps == 3
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    load_config_file(tmp_path / "empty.yaml")


# -- captions and tables ------------------------------------------------------------------------


def test_a_caption_that_is_a_fifo_or_dev_zero_skips_its_clip(tmp_path):
    for name in ("fifo", "zero", "loop", "big", "dir", "ok"):
        (tmp_path / f"{name}.png").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo.txt")
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    (tmp_path / "loop.txt").symlink_to(tmp_path / "loop.txt")
    (tmp_path / "big.txt").write_text("a" * (CAPTION_LIMIT + 1))
    (tmp_path / "dir.txt").mkdir()
    (tmp_path / "ok.txt").write_text("a red ball")
    with deadline(10):
        items = {item.key: item for item in list_sources(tmp_path)}
    assert items["ok.png"].problem is None
    assert "FIFO" in items["fifo.png"].problem
    assert "character device" in items["zero.png"].problem
    assert "symlink loop" in items["loop.png"].problem
    assert "over the 64 KiB limit" in items["big.png"].problem
    for key in ("fifo.png", "zero.png", "loop.png", "big.png"):
        assert items[key].caption is None and items[key].problem.startswith("cannot read caption")


def test_a_table_that_is_a_device_or_too_big_is_one_input_error(tmp_path):
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    (tmp_path / "huge.jsonl").touch()
    os.truncate(tmp_path / "huge.jsonl", 2 << 30)
    with deadline(10):
        with pytest.raises(InputError, match="character device"):
            list_sources(tmp_path / "zero.csv")
        with pytest.raises(InputError, match="over the 1 GiB limit"):
            list_sources(tmp_path / "huge.jsonl")


def test_a_table_row_naming_an_impossible_path_is_a_bad_row(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    rows = [{"path": "a" * 300 + ".png"}, {"path": "a\x00b.png"}, {"path": "pipe.png"}]
    table = tmp_path / "t.jsonl"
    table.write_text("".join(json.dumps({**r, "caption": "x"}) + "\n" for r in rows))
    with deadline(10):
        problems = {item.key[-8:]: item.problem for item in list_sources(table)}
    assert problems["pipe.png"] == "not a file: 'pipe.png'"
    assert problems["a\x00b.png"] == "cannot read file 'a\\x00b.png': embedded null byte"
    assert problems["aaaa.png"].endswith(": file name too long")


# -- the CLI under a memory limit, with stdin closed --------------------------------------------


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def run_cases(cases: list[list[str]], folder: Path, extra_env: dict | None = None) -> list[dict]:
    """Run ``univid ARGV`` for each case in one worker process; its results, in order."""
    spec = folder / "cases.json"
    spec.write_text(json.dumps(cases))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(spec), str(CASE_SECONDS)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CASE_SECONDS * len(cases) + 60,
        preexec_fn=_limit_memory,
        env=env,
        cwd=folder,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_clean(case: list[str], result: dict, allowed: tuple[int, ...] = (0, 2)) -> None:
    err, code = result["err"], result["code"]
    where = f"univid {' '.join(case)} -> {code}:\n{err[-3000:]}"
    assert code in allowed, where
    assert "Traceback" not in err and "[y/N]" not in err + result["out"], where
    if code == 2:
        last = err.strip().splitlines()[-1]
        assert last.startswith("univid: error:"), where
        assert len(last) < 600, where


# The places a file is expected, and what can be there instead.
PLACES = ("config", "caption", "table", "model-info", "model-export", "encoder")
ENCODER_FILES = (".", "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")
SIZE = ["--frames", "1", "--height", "16", "--width", "16"]
NONSTR = ["1: 2", "null: x", "model: {1: 2}", "? [a]\n: b", "true: 1", "model:\n  ? [1]\n  : 2"]
TOPLEVEL = ["[1]", "3", '"s"', "null", "true", "{}", "[]"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    from PIL import Image
    from tiny_text import save_tiny_clip

    root = tmp_path_factory.mktemp("assets")
    Image.new("RGB", (16, 16), (200, 30, 30)).save(root / "a.png")
    save_tiny_clip(root / "enc")
    (root / "ok").mkdir()
    shutil.copy(root / "a.png", root / "ok" / "a.png")
    (root / "ok" / "a.txt").write_text("a red square")
    return root


def plant(path: Path, kind: str, data: bytes = b"") -> None:
    """Put a ``kind`` of file at ``path`` (replacing whatever is there)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    if kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind in ("/dev/zero", "/dev/null"):
        path.symlink_to(kind)
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "dangling":
        path.symlink_to(path.with_name("nowhere"))
    elif kind == "huge":
        path.touch()
        os.truncate(path, int(data or 2 << 30))  # sparse: costs no disk
    else:  # "bytes"
        path.write_bytes(data)


def build_case(place: str, kind: str, data: bytes, folder: Path, assets: Path, pick: int) -> list:
    """A hostile ``kind`` at ``place`` under ``folder``: the argv that reads it."""
    folder.mkdir(parents=True)
    if place == "config":
        path = folder / ("c.yaml", "c.json")[pick % 2]
        (folder / "busy").mkdir()  # a config that loads ends at "not empty": nothing trains
        (folder / "busy" / "x").touch()
        plant(path, kind, data)
        return ["train", str(path), "--out", str(folder / "busy")]
    if place == "caption":
        (folder / "v").mkdir()
        shutil.copy(assets / "a.png", folder / "v" / "a.png")
        plant(folder / "v" / "a.txt", kind, data)
        return ["prepare", str(folder / "v"), "--check", *SIZE]
    if place == "table":
        shutil.copy(assets / "a.png", folder / "a.png")
        path = folder / ("t.csv", "t.jsonl")[pick % 2]
        plant(path, kind, data)
        return ["prepare", str(path), "--check", *SIZE]
    if place.startswith("model"):
        model = folder / "m"
        model.mkdir()
        (model / "model.safetensors").write_bytes(b"\0" * 64)
        plant(model / "config.json", kind, data)
        if place == "model-info":
            return ["info", "--model", str(model), "--json"]
        return ["export", str(model), "--out", str(folder / "exported")]
    assert place == "encoder"
    encoder = folder / "enc"
    shutil.copytree(assets / "enc", encoder)
    plant(encoder / ENCODER_FILES[pick % len(ENCODER_FILES)], kind, data)
    return [
        "prepare", str(assets / "ok"), "--out", str(folder / "cache"), "--text-encoder",
        str(encoder), "--device", "cpu", *SIZE,
    ]  # fmt: skip


def check_results(cases: list, results: list[dict]) -> None:
    failures = []
    for (place, argv), result in zip(cases, results):
        allowed = (0, 1, 2) if place in ("caption", "table") else (0, 2)  # 1: bad clips listed
        try:
            assert_clean(argv, result, allowed)
            assert result["s"] < CASE_SECONDS
            if result["code"] == 1:
                assert "a.png: " in result["out"], result  # the clip, with its reason
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


KINDS = {
    "dir": b"",
    "fifo": b"",
    "/dev/zero": b"",
    "/dev/null": b"",
    "loop": b"",
    "dangling": b"",
    "huge": b"",
    "empty": b"",
    "junk": bytes(range(256)) * 4,
    "deep-json": b"[" * 50_000 + b"]" * 50_000,
    "deep-yaml": b"a: " + b"{b: " * 3000 + b"1" + b"}" * 3000,
    "bomb": alias_bomb().encode(),
    "non-string keys": b"model:\n  1: 2\nnull: 3\n",
}
SPECIAL = ("dir", "fifo", "/dev/zero", "/dev/null", "loop", "dangling", "huge")


def test_every_hostile_kind_at_every_place_ends_cleanly(tmp_path, assets):
    """The whole grid once: every place a file is expected x every kind of hostile file."""
    cases = []
    for p, place in enumerate(PLACES):
        for k, (kind, data) in enumerate(KINDS.items()):
            planted = kind if kind in SPECIAL else "bytes"
            argv = build_case(place, planted, data, tmp_path / f"{p}-{k}", assets, p + k)
            cases.append((place, argv))
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules")}
    check_results(cases, run_cases([argv for _, argv in cases], tmp_path, env))


contents = st.one_of(
    st.binary(max_size=3000),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(20, 100_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(20, 5_000).map(lambda n: b"a: " + b"{b: " * n + b"1" + b"}" * n),
    st.builds(alias_bomb, st.integers(2, 9), st.integers(2, 9)).map(str.encode),
    st.sampled_from(NONSTR + TOPLEVEL).map(str.encode),
)
sizes = st.sampled_from([CAPTION_LIMIT + 1, CONFIG_LIMIT + 1, (1 << 30) + 1, 2 << 30])
hostile = st.one_of(
    st.tuples(st.sampled_from(SPECIAL[:-1]), st.just(b"")),
    st.tuples(st.just("huge"), sizes.map(lambda n: str(n).encode())),
    st.tuples(st.just("bytes"), contents),
)


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    cases=st.lists(
        st.tuples(st.sampled_from(PLACES), hostile, st.integers(0, 9)), min_size=4, max_size=8
    )
)
def test_random_files_where_a_file_is_expected_end_cleanly(tmp_path, assets, cases):
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    built = []
    for n, (place, (kind, data), pick) in enumerate(cases):
        built.append((place, build_case(place, kind, data, folder / str(n), assets, pick)))
    results = run_cases([argv for _, argv in built], folder, {"HF_MODULES_CACHE": str(folder)})
    check_results(built, results)
    shutil.rmtree(folder)


# -- item 11: a model folder never runs its own Python --------------------------------------------

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import CLIPTextConfig, CLIPTextModel
class EvilConfig(CLIPTextConfig):
    model_type = "evil"
class EvilModel(CLIPTextModel):
    config_class = EvilConfig
"""


def test_a_text_encoder_folder_with_its_own_code_is_refused_without_a_prompt(tmp_path, assets):
    """config.json's auto_map names a module of the folder that creates a file on import: the
    load fails with one line, the file is never created, and nothing asks [y/N] (stdin is
    closed: a prompt would read EOF, an answer "y" would run the code)."""
    encoder = tmp_path / "enc"
    shutil.copytree(assets / "enc", encoder)
    marker = tmp_path / "PWNED"
    (encoder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    config = json.loads((encoder / "config.json").read_text())
    config["model_type"] = "evil"  # not a transformers type: only the folder's code knows it
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (encoder / "config.json").write_text(json.dumps(config))
    argv = ["prepare", str(assets / "ok"), "--out", str(tmp_path / "cache"),
            "--text-encoder", str(encoder), "--device", "cpu", *SIZE]  # fmt: skip
    [result] = run_cases([argv], tmp_path, {"HF_MODULES_CACHE": str(tmp_path / "modules")})
    assert_clean(argv, result, allowed=(2,))
    assert "univid never runs" in result["err"]
    assert not marker.exists()
    assert not list((tmp_path / "modules").rglob("evil.py"))  # not even copied to be imported
