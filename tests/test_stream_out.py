"""Streaming out: frames go into the file as a generator yields them, and a stop of any kind
(Ctrl-C, SIGTERM, SIGKILL) leaves a playable file of the frames made so far."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest

from univid.errors import InputError
from univid.stream_out import StreamStopped, terminate_as_interrupt, write_stream

H, W = 10, 14


def frame(i: int, h: int = H, w: int = W) -> np.ndarray:
    """Frame ``i``: a flat colour no other frame of a short stream shares."""
    return np.broadcast_to(np.array([(7 * i) % 256, 128, 255 - (7 * i) % 256], np.uint8), (h, w, 3))


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def assert_frames(path: Path, count: int, h: int = H, w: int = W) -> None:
    """``path`` decodes to exactly frames 0 .. count-1 (colours within H.264's error)."""
    got = decoded(path)
    assert len(got) == count
    for i, f in enumerate(got):
        assert f.shape == (h + h % 2, w + w % 2, 3)  # odd sides padded to even
        inner = (slice(h - h % 2), slice(w - w % 2))  # yuv420 blends a row next to the padding
        assert np.abs(f[inner].astype(int) - frame(i, h, w)[inner]).max() <= 6, i


def test_generator_frames_all_written_and_in_the_file_as_they_come(tmp_path):
    path = tmp_path / "long.mp4"
    seen_in_file = []

    def frames():
        for i in range(20):
            if i in (2, 9, 13):  # frames 0 .. i-2 are already in the (unfinished) file
                seen_in_file.append(len(decoded(path)))
            yield frame(i)

    assert write_stream(frames(), path, fps=8, total=20) == 20
    assert seen_in_file == [1, 8, 12]
    assert_frames(path, 20)
    assert write_stream((frame(i, 5, 6) for i in range(3)), path, scale=3) == 3
    assert_frames(path, 3, 15, 18)  # 5x6 scaled 3x, then padded


def test_interrupted_stream_keeps_its_frames(tmp_path):
    def stopped_after(n):
        for i in range(n):
            yield frame(i)
        raise KeyboardInterrupt

    for name in ("v.mp4", "v.npy", "v.gif"):
        with pytest.raises(StreamStopped, match=f"stopped at frame 5 of 40; .*{name} holds 5"):
            write_stream(stopped_after(5), tmp_path / name, total=40)
    assert_frames(tmp_path / "v.mp4", 5)
    assert np.array_equal(np.load(tmp_path / "v.npy"), np.stack([frame(i) for i in range(5)]))
    from PIL import Image

    assert Image.open(tmp_path / "v.gif").n_frames == 5


def test_stopped_before_the_first_frame_leaves_an_older_file(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"older")

    def nothing():
        raise KeyboardInterrupt
        yield

    with pytest.raises(StreamStopped, match="before the first frame"):
        write_stream(nothing(), path)
    with pytest.raises(InputError, match="exceed"):
        write_stream((frame(0) for _ in range(2)), path, scale=10**5)
    assert path.read_bytes() == b"older"


def test_bad_frames_and_paths(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        write_stream([frame(0), frame(1, 4, 4)], tmp_path / "v.mp4")
    assert_frames(tmp_path / "v.mp4", 1)  # the frame before the bad one is kept
    with pytest.raises(ValueError, match="uint8"):
        write_stream([frame(0).astype(np.float32)], tmp_path / "w.mp4")
    with pytest.raises(InputError, match="must end in one of"):
        write_stream([frame(0)], tmp_path / "v.avi")


def test_terminate_as_interrupt_raises_and_restores():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal lands long before
    assert signal.getsignal(signal.SIGTERM) is before


# A slow generator (as a model making chunks is) streamed into an mp4 in a process of its own.
# It prints i (flushed) as it asks for frame i: frames 0 .. i-2 are in the file by then.
SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    import numpy as np
    from univid.stream_out import StreamStopped, terminate_as_interrupt, write_stream

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored

    def frames():
        for i in range(400):
            print(i, flush=True)
            time.sleep(0.05)
            yield np.full((16, 16, 3), i % 256, np.uint8)

    try:
        with terminate_as_interrupt():
            write_stream(frames(), sys.argv[1], total=400)
    except StreamStopped as stop:
        print(f"univid: {stop}", file=sys.stderr)
        sys.exit(130)
    """
)


def stream_until(path: Path, frames_done: int) -> tuple[subprocess.Popen, int]:
    """Start SCRIPT writing ``path``; return it, and how many frames it had written, once it
    has written at least ``frames_done``."""
    src = str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    cmd = ["nice", "-n", "19", sys.executable, "-c", SCRIPT, str(path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    done = 0
    while done < frames_done and time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        done = int(line)
    assert done >= frames_done, "the stream did not start"
    return proc, done


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_stream_leaves_a_playable_file(tmp_path, sig):
    path = tmp_path / "long.mp4"
    proc, done = stream_until(path, 10)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    held = len(decoded(path))
    assert done <= held < 400
    assert f"univid: stopped at frame {held} of 400; {path} holds {held} frames" in err


def test_killed_stream_plays_to_its_last_frame(tmp_path):
    path = tmp_path / "long.mp4"
    proc, done = stream_until(path, 10)
    proc.kill()  # SIGKILL: nothing is closed
    proc.communicate(timeout=30)
    got = decoded(path)
    assert done - 1 <= len(got) < 400
    assert all(abs(int(f[0, 0, 0]) - i) <= 3 for i, f in enumerate(got))
