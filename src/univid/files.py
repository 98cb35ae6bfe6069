"""Small file helpers shared by checkpoints, caches and model folders: crash-safe writes, the
one place a full disk becomes one line, and reads of user files that fail with one line (never
a hang on a FIFO, never a read of ``/dev/zero`` or of a file larger than its kind can be)."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import threading
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

# The most univid reads of each kind of file it reads whole (bytes). Each is far above what a
# real file of that kind holds and far below what fits in memory.
CONFIG_LIMIT = 1 << 20  # a config file or a model folder's config.json: a few KB in practice
CAPTION_LIMIT = 64 << 10  # a caption sidecar: 30x the longest caption a prompt may be
TABLE_LIMIT = 1 << 30  # a data table: ~5 million rows of a 200-byte caption
JSON_LIMIT = 1 << 30  # univid's own JSON (cache index: one entry a clip, as big as a table)
MODEL_TEXT_LIMIT = 64 << 20  # a text file of a model folder (tokenizer.json is up to ~35 MB)

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class UnreadableFile(InputError):
    """A user file that is missing, not a regular file, or too big; ``reason`` says which."""

    def __init__(self, path: Path, what: str, reason: str) -> None:
        super().__init__(f"cannot read {what} {path}: {reason}")
        self.path, self.what, self.reason = path, what, reason


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links (a symlink loop?)"
    return (exc.strerror or type(exc).__name__).lower()


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    return f"it is {kind}, not a regular file"


def file_problem(path: Path, limit: int) -> str | None:
    """Why ``path`` cannot be read whole as a user file (symlinks followed), or None: it is
    missing, a symlink loop, a folder, FIFO, device or socket, or over ``limit`` bytes. Only
    ``stat`` is called: nothing is opened."""
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        return _os_reason(exc) if isinstance(exc, OSError) else str(exc)
    problem = _not_regular(info.st_mode)
    if problem is None and info.st_size > limit:
        problem = f"it is {_size(info.st_size)}, over the {_size(limit)} limit"
    return problem


def read_user_bytes(path: Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path`` (symlinks followed), at most ``limit`` of them.

    Anything else is an :class:`UnreadableFile` (an InputError) naming ``what`` ("config file",
    "caption file"): a missing file, a symlink loop, a folder, a FIFO or device (refused before
    any open, so a FIFO never blocks and ``/dev/zero`` is never read), a file over ``limit``
    (also one that grew past it while read)."""
    path = Path(path)
    problem = file_problem(path, limit)
    if problem is not None:
        raise UnreadableFile(path, what, problem)
    try:
        # O_NONBLOCK: were the file swapped for a FIFO since the stat, open must not wait.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UnreadableFile(path, what, _os_reason(exc)) from None
    try:
        problem = _not_regular(os.fstat(fd).st_mode)
        if problem is not None:
            raise UnreadableFile(path, what, problem)
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UnreadableFile(path, what, _os_reason(exc)) from None
    finally:
        os.close(fd)
    if size > limit:
        raise UnreadableFile(path, what, f"it is over the {_size(limit)} limit")
    return b"".join(chunks)


def check_folder_files(folder: Path, what: str) -> None:
    """Before a library reads the folder ``folder`` (a model, tokenizer or VAE folder): every
    entry must be a file or a folder (no FIFO a library would block on, no device, no symlink
    loop), and its JSON/text files at most :data:`MODEL_TEXT_LIMIT` bytes. An
    :class:`UnreadableFile` otherwise."""
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError as exc:
        raise UnreadableFile(Path(folder), what, _os_reason(exc)) from None
    for entry in entries:
        try:
            mode = os.stat(entry).st_mode
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # a dangling link: libraries treat it as absent
                continue
            raise UnreadableFile(entry, f"a file of {what}", _os_reason(exc)) from None
        if stat.S_ISDIR(mode):
            continue
        text = entry.suffix.lower() in (".json", ".txt", ".model", ".yaml", ".yml")
        problem = file_problem(entry, MODEL_TEXT_LIMIT if text else 1 << 62)
        if problem is not None:
            raise UnreadableFile(entry, f"a file of {what}", problem)


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


def read_json(path: Path, limit: int = JSON_LIMIT) -> dict[str, Any]:
    """A JSON object from ``path`` (a regular file of at most ``limit`` bytes); anything else
    is a :class:`CorruptFileError`."""
    try:
        value = json.loads(read_user_bytes(path, limit, "JSON file").decode("utf-8"))
    except UnreadableFile as exc:
        raise CorruptFileError(f"cannot read {path} as JSON: {exc.reason}") from None
    except RecursionError:
        raise CorruptFileError(f"cannot read {path} as JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also an int of 5000 digits
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


# Signals that stop univid cleanly: Ctrl-C and a scheduler's or a container's TERM.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held(on_first: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them to the handlers there
    before: work that must not be cut in half (a checkpoint, a frame being muxed) is finished
    first. ``on_first()`` runs when the first one arrives; a second Ctrl-C stops at once. Main
    thread only: Python delivers signals there, and only there may handlers be set; elsewhere
    a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and signal.SIGINT in received:
            raise KeyboardInterrupt
        if not received and on_first is not None:
            on_first()
        received.append(signum)

    previous = {s: signal.signal(s, hold) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
    for s in dict.fromkeys(received):  # now delivered to the handlers there were
        signal.raise_signal(s)
