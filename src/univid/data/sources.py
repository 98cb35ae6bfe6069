"""Listing real training media: a folder of videos/images with sidecar captions, or a table.

A *folder* holds media files (any depth) each with its caption in a sidecar text file of the same
name: ``clips/cat.mp4`` + ``clips/cat.txt``. A *table* is a ``.csv`` (with a header row) or a
``.jsonl`` file (one JSON object a line) with ``path`` and ``caption`` columns; relative paths are
resolved against the table's folder and any other columns are kept in :attr:`SourceItem.extra`.

:func:`list_sources` never opens the media: it reports what is wrong with an item before any
decoding (no caption, a caption that is not usable text, missing file, unsupported type) in
:attr:`SourceItem.problem` and raises :class:`~univid.errors.InputError` only for a source that
cannot be read at all. Every caption is cleaned by :func:`univid.text.clean.clean_text`, the gate
prompts go through, so a listed caption is exactly what generation would accept for it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from univid.config.sections import show_value
from univid.errors import InputError
from univid.files import CAPTION_LIMIT, TABLE_LIMIT, UnreadableFile, read_user_bytes
from univid.text.clean import clean_text

VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
MEDIA_EXTS = VIDEO_EXTS + IMAGE_EXTS
TABLE_EXTS = (".csv", ".jsonl")
CAPTION_EXT = ".txt"


@dataclass(frozen=True)
class SourceItem:
    """One entry of a data source; ``problem`` says why it cannot be used (None: looks usable)."""

    key: str  # the path relative to the folder/table's folder, or "row N" for a row with no path
    path: Path | None  # the media file; None when a caption has no file
    caption: str | None  # cleaned; as written when it is the problem; None: missing, unreadable
    problem: str | None  # why the item is unusable before any decoding, else None
    extra: dict[str, Any] = field(default_factory=dict)  # other columns of a table row


def is_image(path: str | Path) -> bool:
    """Whether ``path`` has an image extension (images are read as 1-frame clips)."""
    return Path(path).suffix.lower() in IMAGE_EXTS


def list_sources(src: str | Path) -> list[SourceItem]:
    """Every item of the folder or ``.csv``/``.jsonl`` table ``src``, sorted by key."""
    src = Path(src)
    if src.is_dir():
        items = _list_folder(src)
    elif src.suffix.lower() in TABLE_EXTS:
        if not os.path.lexists(src):  # a FIFO, a device, a loop: the reader says which
            raise InputError(f"data table {str(src)!r} not found")
        items = _list_table(src)
    elif src.exists():
        raise InputError(f"data source {str(src)!r} must be a folder, a .csv or a .jsonl table")
    else:
        raise InputError(f"data source {str(src)!r} not found")
    return sorted(items, key=lambda item: item.key)


def _unsupported(suffix: str) -> str:
    return f"unsupported file type {suffix or '(none)'!r} (use one of {', '.join(MEDIA_EXTS)})"


def _read_caption(path: Path) -> tuple[str | None, str | None]:
    """(caption, problem) of a sidecar caption file."""
    try:
        data = read_user_bytes(path, CAPTION_LIMIT, "caption file")
    except UnreadableFile as exc:  # a FIFO, a device, a symlink loop, too big: never a hang
        return None, f"cannot read caption file: {exc.reason}"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, "caption is not UTF-8 text"
    return _clean_caption(text)


def _clean_caption(text: str) -> tuple[str, str | None]:
    """(caption, problem): the caption cleaned, or as written with the reason it is refused."""
    try:
        return clean_text(text, "caption"), None
    except InputError as exc:
        return text, str(exc)


def _list_folder(root: Path) -> list[SourceItem]:
    def fail(exc: OSError) -> None:
        raise InputError(f"cannot read folder {str(exc.filename)!r}: {exc.strerror}")

    files: list[Path] = []
    for folder, dirs, names in os.walk(root, onerror=fail):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(folder, n) for n in sorted(names) if not n.startswith(".")]
    captions: dict[tuple[Path, str], Path] = {}
    has_media: set[tuple[Path, str]] = set()
    has_other: set[tuple[Path, str]] = set()
    for f in files:
        suffix = f.suffix.lower()
        if suffix == CAPTION_EXT:
            captions[f.parent, f.stem] = f
        else:
            (has_media if suffix in MEDIA_EXTS else has_other).add((f.parent, f.stem))
    items: list[SourceItem] = []
    for f in files:
        key, stem, suffix = f.relative_to(root).as_posix(), (f.parent, f.stem), f.suffix.lower()
        side = captions.get(stem)
        if suffix == CAPTION_EXT:
            if stem not in has_media and stem not in has_other:
                text, _ = _read_caption(f)
                items.append(SourceItem(key, None, text, "caption without a video file", {}))
        elif suffix not in MEDIA_EXTS:
            # A captioned file of a type we cannot read; anything else (notes, metadata next to
            # a video) is not part of the data.
            if side is not None and stem not in has_media:
                text, _ = _read_caption(side)
                items.append(SourceItem(key, f, text, _unsupported(f.suffix), {}))
        elif side is None:
            items.append(SourceItem(key, f, None, "no caption file", {}))
        else:
            text, problem = _read_caption(side)
            items.append(SourceItem(key, f, text, problem, {}))
    return items


def _table_rows(table: Path) -> list[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, row or None, problem) for each row of a .csv or .jsonl table."""
    try:
        text = read_user_bytes(table, TABLE_LIMIT, "data table").decode("utf-8-sig")
    except UnreadableFile as exc:
        raise InputError(f"cannot read data table {str(table)!r}: {exc.reason}") from None
    except UnicodeDecodeError:
        raise InputError(f"data table {str(table)!r} is not UTF-8 text") from None
    rows: list[tuple[int, dict[str, Any] | None, str | None]] = []
    if table.suffix.lower() == ".csv":
        # newline='': rows end only at \n, \r\n or \r; other Unicode line breaks (U+2028,
        # U+0085, form feed, ...) are characters of a field, as they are to any CSV writer.
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        try:
            columns = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = columns
            if "path" not in columns or "caption" not in columns:
                raise InputError(
                    f"data table {str(table)!r} needs 'path' and 'caption' columns, "
                    f"found {show_value(columns)}"
                )
            for row in reader:
                spill = row.pop(None, None)  # type: ignore[call-overload]
                problem = None
                if spill:
                    problem = (
                        f"row has {len(spill)} more field(s) than the header "
                        "(a comma in an unquoted caption?)"
                    )
                rows.append((reader.line_num, row, problem))
        except csv.Error as exc:
            raise InputError(
                f"data table {str(table)!r} is not valid CSV (line {reader.line_num}): {exc}"
            ) from None
        return rows
    objects = 0
    # JSON lines end at \n only (a \r before it is stripped): U+2028 and kin are valid inside
    # JSON strings, and str.splitlines() would cut a row there.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            rows.append((number, None, f"invalid JSON: {getattr(exc, 'msg', str(exc))}"))
            continue
        except RecursionError:
            rows.append((number, None, "invalid JSON: nested too deeply"))
            continue
        if not isinstance(row, dict):
            rows.append((number, None, "line is not a JSON object"))
            continue
        objects += 1
        rows.append((number, row, None))
    if not objects:
        raise InputError(f"data table {str(table)!r} is not valid JSONL (no JSON object lines)")
    if not any(r is not None and ("path" in r or "caption" in r) for _, r, _ in rows):
        raise InputError(f"data table {str(table)!r} needs 'path' and 'caption' fields")
    return rows


def _media_problem(path: Path, written: str) -> str | None:
    """Why the media file a table row names cannot be used (None: it is a regular file)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"file not found: {show_value(written)}"
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, a symlink loop, ...
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"cannot read file {show_value(written)}: {reason.lower()}"
    return None if stat.S_ISREG(mode) else f"not a file: {show_value(written)}"


def _list_table(table: Path) -> list[SourceItem]:
    base = table.parent
    items: list[SourceItem] = []
    seen: set[str] = set()
    for number, row, problem in _table_rows(table):
        row = dict(row or {})
        raw_path, caption = row.pop("path", None), row.pop("caption", None)
        key, path = f"row {number}", None
        if isinstance(raw_path, str) and raw_path.strip():
            written = Path(raw_path.strip())
            path = written if written.is_absolute() else base / written
            try:
                key = path.relative_to(base).as_posix()
            except ValueError:
                key = path.as_posix()
            if key in seen:  # the same file again (e.g. a second caption): keep ids unique
                key = f"{key} (row {number})"
        seen.add(key)
        caption_problem = None
        if isinstance(caption, str):
            caption, caption_problem = _clean_caption(caption)
        elif caption is not None:
            problem = problem or "caption is not text"
            caption = None
        if problem is None:
            if raw_path is None or (isinstance(raw_path, str) and not raw_path.strip()):
                problem = "missing path"
            elif not isinstance(raw_path, str):
                problem = "path is not text"
            elif caption is None:
                problem = "missing caption"
            elif caption_problem is not None:
                problem = caption_problem
            elif path is not None and path.suffix.lower() not in MEDIA_EXTS:
                problem = _unsupported(path.suffix)
            elif path is not None:
                problem = _media_problem(path, raw_path.strip())
        items.append(SourceItem(key, path, caption, problem, row))
    return items
