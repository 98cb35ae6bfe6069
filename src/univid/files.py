"""Small file helpers shared by checkpoints, caches and model folders: crash-safe writes, JSON
reads that fail with one line, and the one place a full disk becomes one line."""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from univid.errors import CorruptFileError, InputError, UnividError

# A write that fails for lack of room (or of a writable disk): the user must free space or choose
# another place, so it is one line, never a traceback.
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EROFS: "read-only file system",
}


def fsync(path: Path) -> None:
    """Flush a file (or folder) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)``, fsync, and rename onto ``path``: readers see the old file or
    the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a part behind, whatever stopped the write
        raise


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else is a :class:`CorruptFileError`."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"cannot read {path} as JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"{path} does not hold a JSON object")
    return value


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception behind it: causes, contexts, and the per-rank failures that
    ``torch.distributed.checkpoint`` wraps in its CheckpointException."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.append(e.__cause__)
        if not e.__suppress_context__:  # `raise ... from None` has said all there is to say
            todo.append(e.__context__)
        failures = getattr(e, "failures", None)
        if isinstance(failures, dict):
            todo += [f[0] if isinstance(f, tuple) else f for f in failures.values()]


def storage_error(exc: BaseException, path: str | Path | None = None) -> UnividError | None:
    """A full (or read-only) disk anywhere behind ``exc`` as one line naming the file (or
    ``path``, what was being written); None when ``exc`` is about something else."""
    for e in causes(exc):
        code, where = None, path
        if isinstance(e, OSError):
            code, where = e.errno, e.filename or path
        elif type(e).__name__ == "SafetensorError":  # its Rust I/O error, as text
            found = re.search(r"\(os error (\d+)\)|Os \{ code: (\d+),", str(e))
            code = int(found.group(1) or found.group(2)) if found else None
        if code in STORAGE_ERRNOS:
            what = f"cannot write {where}" if where else "cannot write"
            return InputError(f"{what}: {STORAGE_ERRNOS[code]}")
    return None


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a full disk met while writing ``path`` into one :class:`InputError` line."""
    try:
        yield
    except BaseException as exc:
        error = storage_error(exc, path)
        if error is None:
            raise
        raise error from None
