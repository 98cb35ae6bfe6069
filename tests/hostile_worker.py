"""Runs ``univid ARGV`` cases in one process for tests/test_hostile_files.py; prints a JSON list
of results. Each case runs under an alarm whose exception no handler in univid can swallow, so
a hang (a FIFO opened, an endless read) is recorded, not waited on; any crash is recorded with
its traceback. Only the standard library and univid.cli are imported."""

from __future__ import annotations

import io
import json
import signal
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so no handler in univid can swallow it."""


def ring(signum, frame):
    raise Hang("still running at the deadline")


def main(spec: str, seconds: int) -> None:
    from univid.cli import main as univid

    signal.signal(signal.SIGALRM, ring)
    results = []
    for argv in json.loads(Path(spec).read_text()):
        out, err = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        try:
            with redirect_stdout(out), redirect_stderr(err):
                signal.alarm(seconds)
                try:
                    code = univid(argv)
                finally:
                    signal.alarm(0)
        except SystemExit as exc:
            code = exc.code
        except BaseException:  # noqa: BLE001 - a hang, a MemoryError, any crash: recorded
            code = "crash"
            err.write(traceback.format_exc())
        seconds_taken = time.perf_counter() - start
        results.append(
            {"code": code, "out": out.getvalue()[-2000:], "err": err.getvalue(), "s": seconds_taken}
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
