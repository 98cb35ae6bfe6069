"""Hostile and careless text: prompts and captions of every Unicode kind, and tables whose
captions hold line-break characters. Every prompt and caption goes through one gate,
``univid.text.clean.clean_text``: what is harmless is normalised, what is not text is one line."""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
import unicodedata
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from media import make_image
from test_properties import assert_clean, run

from univid.cli import main
from univid.data.cache import CacheDataset
from univid.data.sources import list_sources
from univid.errors import InputError
from univid.pipeline import Pipeline, check_prompt
from univid.text.clean import KEPT_FORMAT, MAX_TEXT_CHARS, clean_text

PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
EMOJI = "\U0001f469\u200d\U0001f4bb"  # woman, zero-width joiner, laptop
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
SPACES = " \t\u00a0\u1680\u2000\u2007\u200a\u202f\u205f\u3000"
INVISIBLE = "\u200b\ufeff\u00ad\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2066\u2069"


@pytest.fixture(scope="module")
def bundled() -> Pipeline:
    return Pipeline.from_pretrained("shapes-tiny", device="cpu")


# --- the gate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, cleaned",
    [
        ("a red\u00a0circle", "a red circle"),
        ("  a\tred\n\ncircle \r\n", "a red circle"),
        (f"a{LINE_BREAKS}red{SPACES}circle", "a red circle"),
        (f"a {INVISIBLE}red", "a red"),
        ("\ufeffa red circle", "a red circle"),
        ("a red\u200b circle", "a red circle"),
        ("cafe\u0301", "caf\u00e9"),  # NFC
        ("e\u200b\u0301", "\u00e9"),  # a dropped mark leaves a letter and its accent: composed
        (f"{EMOJI} codes", f"{EMOJI} codes"),  # ZWJ kept
        (PERSIAN, PERSIAN),  # its zero-width non-joiner is kept
        ("\u200fa circle moving left\u200e", "a circle moving left"),
        ("\U0001f44d\U0001f3fd \u2764\ufe0f", "\U0001f44d\U0001f3fd \u2764\ufe0f"),
        ("x" * MAX_TEXT_CHARS, "x" * MAX_TEXT_CHARS),
        ("a" + " \n" * 5000 + "b", "a b"),  # length counts the cleaned text
    ],
)
def test_harmless_text_is_normalised(text, cleaned):
    assert clean_text(text) == cleaned
    assert check_prompt(text) == cleaned
    assert clean_text(cleaned) == cleaned


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "prompt is empty"),
        (" \n\t\u3000", "prompt is empty"),
        ("\u200b\ufeff\u200e", "prompt is empty"),
        ("x" * (MAX_TEXT_CHARS + 1), f"has {MAX_TEXT_CHARS + 1} characters; at most"),
        ("a\x00b", "control characters (U+0000)"),
        ("red\x1bcircle", "control characters (U+001B)"),
        ("a\x7f", "control characters (U+007F)"),
        ("a\x9bb", "control characters (U+009B)"),  # C1 CSI
        ("bad \udcff bytes", "not valid UTF-8 text"),  # undecodable argv bytes
        ("\ud83d", "not valid UTF-8 text"),
    ],
)
def test_what_is_not_text_is_one_line(text, message):
    with pytest.raises(InputError, match=re.escape(message)) as info:
        clean_text(text)
    assert "\n" not in str(info.value)


def test_the_gate_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, univid.text.clean, univid.data.sources; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_the_tokenizer_takes_every_kept_character(bundled):
    kept = [
        f"{EMOJI} a red circle",
        PERSIAN,
        "\U0001f3f3\ufe0f\u200d\U0001f308 \ue000 \U000f0000 \ufdd0 \uffff",  # private use, nonchar.
        "\u0301\u0301 a\u0300 \u1100\u1161 \U0001d400",  # lone marks, jamo, math letters
    ]
    text, mask = bundled.text_encoder.encode([clean_text(k) for k in kept])
    assert text.shape[0] == len(kept) and bool(mask[:, 0].all())
    assert np.isfinite(text.numpy()).all()


# --- prompts ------------------------------------------------------------------------------------


def test_a_no_break_space_prompt_gives_the_same_video_as_a_plain_one(bundled, tmp_path, capsys):
    plain = bundled("a red circle moving right", num_steps=1)
    for variant in ["a red\u00a0circle moving right", "\u200fa red\tcircle\u2028moving right "]:
        assert np.array_equal(bundled(variant, num_steps=1), plain)
    # and through the command line, file for file
    outs = []
    with mock.patch.object(Pipeline, "from_pretrained", return_value=bundled):
        for k, prompt in enumerate(["a red circle moving right", "a red\u00a0circle moving right"]):
            outs.append(tmp_path / f"v{k}.gif")
            argv = ["generate", prompt, "--out", str(outs[-1]), "--steps", "1"]
            assert main(argv) == 0, capsys.readouterr().err
    assert outs[0].read_bytes() == outs[1].read_bytes()


@pytest.mark.parametrize(
    "prompt",
    [
        f"{EMOJI} a red circle",  # emoji joined by a zero-width joiner
        PERSIAN,  # Persian, with its non-joiner
        "\u200fa red circle\u200e",  # right-to-left and left-to-right marks
        "a red\u00a0circle",
    ],
)
def test_ordinary_prompts_are_generated(prompt, bundled, tmp_path, capsys):
    out = tmp_path / "v.gif"
    with mock.patch.object(Pipeline, "from_pretrained", return_value=bundled):
        code = main(["generate", prompt, "--out", str(out), "--steps", "1"])
    assert code == 0, capsys.readouterr().err
    assert out.is_file()


# --- captions: prepare, then train ---------------------------------------------------------------

CAPTIONS = {
    "newline": "a test\npattern",
    "tab": "a\ttest pattern",
    "nbsp": "a test\u00a0pattern",
    "zero": "a test\u200b pattern",
    "bom": "\ufeffa still image",
    "long": "a " * 1250,  # 2,500 characters
    "nul": "a test\x00pattern",
}


def test_captions_that_were_refused_as_prompts_cannot_stop_training(tmp_path, capsys):
    src = tmp_path / "src"
    for name, text in CAPTIONS.items():
        make_image(src / f"{name}.png", width=32, height=24)
        (src / f"{name}.txt").write_text(text, encoding="utf-8")
    cache = tmp_path / "cache"
    args = ["prepare", str(src), "--out", str(cache), "--buckets", "1x24x32"]
    assert main([*args, "--max-bad-fraction", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 bad clip(s)" in err
    index = json.loads((cache / "index.json").read_text())
    reasons = {b["key"]: b["reason"] for b in index["bad"]}
    assert reasons == {
        "long.png": f"caption has 2499 characters; at most {MAX_TEXT_CHARS}",
        "nul.png": "caption contains control characters (U+0000)",
    }
    captions = sorted(clip["caption"] for clip in CacheDataset(cache).clips)
    assert captions == sorted(["a still image"] + ["a test pattern"] * 4)

    run = tmp_path / "run"
    overrides = [f"data.cache={cache}", "model.patch=1,4,4", "train.log_every=1"]
    steps = ["train.sample_every=2", "train.ckpt_every=2", "train.steps=4"]
    assert main(["train", "tiny", "--out", str(run), *overrides, *steps]) == 0, capsys.readouterr()
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_00000002.gif",
        "step_00000004.gif",
    ]
    assert list(run.glob("checkpoints/*/COMPLETE")) or list(run.glob("**/COMPLETE"))


def test_an_old_cache_with_raw_captions_still_trains(tmp_path, capsys):
    """A cache made before captions were cleaned: its unusable captions are skipped as sample
    prompts (one line), the usable ones are sampled under their cleaned form."""
    src = tmp_path / "src"
    for name in ("newline", "tab", "nul"):
        make_image(src / f"{name}.png", width=32, height=24)
        (src / f"{name}.txt").write_text(f"{name} caption", encoding="utf-8")
    cache = tmp_path / "cache"
    assert main(["prepare", str(src), "--out", str(cache), "--buckets", "1x24x32"]) == 0
    index = json.loads((cache / "index.json").read_text())
    for clip in index["clips"]:  # what a prepare before captions were cleaned wrote
        name = clip["caption"].split()[0]
        clip["caption"] = CAPTIONS[name] + " " + name
    (cache / "index.json").write_text(json.dumps(index))
    capsys.readouterr()
    run = tmp_path / "run"
    overrides = [f"data.cache={cache}", "model.patch=1,4,4"]
    steps = ["train.sample_every=2", "train.ckpt_every=2", "train.steps=2"]
    assert main(["train", "tiny", "--out", str(run), *overrides, *steps]) == 0
    err = capsys.readouterr().err
    assert err.count("not used as sample prompts") == 1 and "U+0000" in err
    assert (run / "samples" / "step_00000002.gif").is_file()


# --- tables -------------------------------------------------------------------------------------


def test_csv_captions_with_unicode_line_breaks_are_kept_whole(tmp_path):
    make_image(tmp_path / "a.png")
    table = tmp_path / "t.csv"
    rows = [
        "path,caption\r\n",
        "a.png,a red\u2028circle\u2029moving\x85right\x0cfast\x0bnow\r\n",
        'a.png,"quoted\u2028with, comma"\r\n',
        'a.png,"a real\nnewline in quotes"\r\n',
        "a.png,\u2028\r\n",
    ]
    table.write_text("".join(rows), encoding="utf-8", newline="")
    items = list_sources(table)
    assert [(i.key, i.caption, i.problem) for i in items] == [
        ("a.png", "a red circle moving right fast now", None),
        ("a.png (row 3)", "quoted with, comma", None),
        ("a.png (row 5)", "a real newline in quotes", None),  # the line it ends on
        ("a.png (row 6)", "\u2028", "caption is empty"),
    ]


def test_jsonl_rows_with_unicode_line_breaks_are_valid(tmp_path):
    make_image(tmp_path / "a.png")
    table = tmp_path / "t.jsonl"
    captions = ["a\u2028b", "c\u2029d", "e\x85f", "g\x0ch", "i\x0bj", "k\x1cl"]
    lines = [json.dumps({"path": "a.png", "caption": c}, ensure_ascii=False) for c in captions]
    table.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8", newline="")
    items = list_sources(table)
    assert [i.problem for i in items] == [None] * len(captions)
    assert [i.caption for i in items] == ["a b", "c d", "e f", "g h", "i j", "k l"]
    assert items[1].key == "a.png (row 2)"  # one line, one row: numbers are lines of the file


# --- properties ---------------------------------------------------------------------------------

# Every general category: controls, formats, surrogates (as undecodable argv bytes arrive),
# line and paragraph separators, spaces, marks, emoji, private use, unassigned.
any_char = st.characters(codec=None, exclude_categories=())
unicode_text = st.one_of(
    st.text(any_char, max_size=60),
    st.text(
        st.sampled_from(LINE_BREAKS + SPACES + INVISIBLE + "ab\u200c\u200d\u0301"), max_size=30
    ),
    st.lists(
        st.sampled_from(["a red circle", EMOJI, PERSIAN, "\x1b"]),
        max_size=4,
    ).map(" ".join),
    st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.integers(MAX_TEXT_CHARS - 2, MAX_TEXT_CHARS + 2).map(lambda n: "b" * n),
)
REMOVED = set(LINE_BREAKS + INVISIBLE) | {"\t", "\u00a0", "\u3000"}


@settings(max_examples=300, deadline=None)
@given(text=unicode_text)
def test_clean_text_is_idempotent_and_keeps_its_promises(text):
    try:
        cleaned = clean_text(text, "caption")
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("caption ")
        return
    assert clean_text(cleaned, "caption") == cleaned
    assert cleaned == unicodedata.normalize("NFC", cleaned) and cleaned == cleaned.strip()
    assert 0 < len(cleaned) <= MAX_TEXT_CHARS and "  " not in cleaned
    for ch in cleaned:
        category = unicodedata.category(ch)
        assert ch == " " or not ch.isspace(), repr(ch)
        assert category not in ("Cc", "Cs", "Zl", "Zp"), repr(ch)
        assert category != "Cf" or ch in KEPT_FORMAT, repr(ch)
        assert ch not in REMOVED


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(unicode_text, min_size=1, max_size=4))
def test_the_tokenizer_takes_every_cleaned_text(texts, bundled):
    usable = []
    for text in texts:
        try:
            usable.append(clean_text(text))
        except InputError:
            pass
    if usable:
        states, mask = bundled.text_encoder.encode(usable)
        assert states.shape[0] == len(usable) and bool(mask[:, 0].all())
        assert np.isfinite(states.numpy()).all()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prompt=unicode_text)
def test_univid_generate_with_random_unicode_prompts_exits_cleanly(prompt, bundled, capsys):
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(Pipeline, "from_pretrained", return_value=bundled),
    ):
        out = Path(tmp) / "video.gif"
        code, err = run(["generate", prompt, "--out", str(out), "--steps", "1"], capsys)
        assert_clean(code, err)
        assert (code == 0) == out.is_file()
        if code == 2:
            assert len(err.strip().splitlines()) == 1, err


def _csv_table(rows: list[tuple[str, str]], quoting: int, newline: str = "\r\n") -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(
        buffer,
        quoting=quoting,
        escapechar="\\" if quoting == csv.QUOTE_NONE else None,
        lineterminator=newline,
    )
    writer.writerow(["path", "caption"])
    writer.writerows(rows)
    return buffer.getvalue()


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "latin-1"]
caption_text = st.one_of(
    st.text(st.sampled_from(LINE_BREAKS + SPACES + INVISIBLE + 'ab,"\\{}:\u200d'), max_size=20),
    st.text(any_char.filter(lambda c: not "\ud800" <= c <= "\udfff"), max_size=20),
)


@settings(max_examples=120, deadline=None)
@given(
    captions=st.lists(caption_text, min_size=1, max_size=4),
    kind=st.sampled_from(["csv", "jsonl"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    newline=st.sampled_from(["\n", "\r\n"]),
    encoding=st.sampled_from(ENCODINGS),
    ascii_json=st.booleans(),
    noise=st.binary(max_size=8),
)
def test_random_tables_list_or_raise_one_line(
    captions, kind, quoting, newline, encoding, ascii_json, noise
):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a.png").write_bytes(b"not read by the listing")
        rows = [("a.png", c) for c in captions]
        if kind == "csv":
            text = _csv_table(rows, quoting, newline)  # a \r\n inside a caption stays
        else:
            lines = [
                json.dumps({"path": p, "caption": c}, ensure_ascii=ascii_json) for p, c in rows
            ]
            text = newline.join(lines) + newline
        try:
            data = text.encode(encoding)
        except UnicodeEncodeError:
            data = text.encode("utf-8") + noise  # latin-1 cannot hold it: damaged UTF-8 instead
        table = root / f"t.{kind}"
        table.write_bytes(data)
        try:
            items = list_sources(table)
        except InputError as exc:
            assert "\n" not in str(exc)
            event("InputError")
            return
        if data not in (text.encode("utf-8"), text.encode("utf-8-sig")):
            event("listed, not checked")
            return  # other encodings that happen to decode as UTF-8: any listing will do
        if kind == "csv" and quoting == csv.QUOTE_MINIMAL and "\r" not in newline:
            if any("\r" in c for c in captions):
                # The csv module quotes only the characters of its line terminator: it wrote a
                # bare \r unquoted, which every CSV reader takes as the end of a row.
                event("ambiguous CSV: a bare \\r left unquoted by the writer")
                return
        event("listed and checked")
        # Written by the csv module or json.dumps, each caption comes back as clean_text makes it
        # (or with clean_text's reason); CSV rows with a bare \r\n inside a caption are one row.
        assert len(items) == len(captions)
        by_row = sorted(items, key=lambda i: int(i.key.partition("(row ")[2].rstrip(")") or 0))
        for item, written in zip(by_row, captions):
            try:
                expected, problem = clean_text(written, "caption"), None
            except InputError as exc:
                expected, problem = written, str(exc)
            assert (item.caption, item.problem) == (expected, problem), (written, item)
