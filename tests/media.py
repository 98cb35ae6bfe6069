"""Test helpers: real encoded videos and images made with the ffmpeg of imageio-ffmpeg.

Not a test module: tests import it as ``from media import make_video, ...`` (pytest puts the
``tests/`` folder on ``sys.path`` because it has no ``__init__.py``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

# Encoder arguments per container; every one decodes with PyAV.
_CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast"),
    ".mov": ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast"),
    ".mkv": ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast"),
    ".webm": ("-c:v", "libvpx", "-b:v", "200k", "-deadline", "realtime", "-cpu-used", "8"),
    ".avi": ("-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"),
    ".gif": ("-f", "gif"),
}


def ffmpeg(*args: str) -> None:
    """Run ``ffmpeg -y -loglevel error ARGS...``; raise with ffmpeg's message when it fails."""
    cmd = [FFMPEG, "-y", "-nostdin", "-loglevel", "error", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")


def lavfi(source: str, seconds: float, fps: float, width: int, height: int) -> str:
    """A lavfi source graph: a bare source name (``testsrc``, ``testsrc2``, ``smptebars``...) gets
    size, rate and duration; a graph that already has options (``color=c=red``) gets them appended,
    and anything after its first ``,`` (further filters) is kept."""
    head, sep, tail = source.partition(",")
    opts = f"size={width}x{height}:rate={fps}:duration={seconds}"
    head = f"{head}:{opts}" if "=" in head else f"{head}={opts}"
    return head + sep + tail


def make_video(
    path: str | Path,
    seconds: float = 2.0,
    fps: float = 8,
    width: int = 64,
    height: int = 48,
    source: str = "testsrc",
    codec: tuple[str, ...] | None = None,
    extra: tuple[str, ...] = (),
) -> Path:
    """Encode ``seconds`` of a lavfi ``source`` into ``path``; the extension picks the codec
    (libx264 yuv420p for mp4/mov/mkv, vp8 for webm, mjpeg for avi, gif for .gif). ``codec``
    replaces the encoder arguments and ``extra`` is added before the output path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = codec if codec is not None else _CODECS[path.suffix.lower()]
    graph = lavfi(source, seconds, fps, width, height)
    ffmpeg("-f", "lavfi", "-i", graph, *args, *extra, str(path))
    return path


def make_index_video(
    path: str | Path,
    frames: int,
    fps: float,
    step: int = 6,
    width: int = 32,
    height: int = 24,
    extra: tuple[str, ...] = (),
) -> Path:
    """A lossless grey mp4 whose frame ``n`` has luma ``16 + step * n``: frames identify
    themselves by brightness (see :func:`frame_indices`). ``extra``: more encoder arguments."""
    seconds = frames / fps
    return make_video(
        path,
        seconds=seconds,
        fps=fps,
        width=width,
        height=height,
        source=f"color=c=black,geq=lum='16+{step}*N':cb=128:cr=128,trim=end_frame={frames}",
        codec=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-qp", "0", "-preset", "ultrafast"),
        extra=extra,
    )


def decode_all(path: str | Path) -> list[np.ndarray]:
    """Every frame of a video as RGB uint8 (H, W, 3), straight from PyAV (the reference)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


def frame_means(path: str | Path) -> np.ndarray:
    """The mean brightness of every frame of a video, in decoding order."""
    return np.array([frame.mean() for frame in decode_all(path)])


def frame_indices(clip: np.ndarray, means: np.ndarray) -> list[int]:
    """Which frame of an index video (whose ``frame_means`` are ``means``) each clip frame is."""
    return [int(np.abs(means - frame.mean()).argmin()) for frame in clip]


def make_image(path: str | Path, width: int = 64, height: int = 48) -> Path:
    """One frame of ``testsrc`` saved as an image (png, jpg or webp from the extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = lavfi("testsrc", 1.0, 1, width, height)
    ffmpeg("-f", "lavfi", "-i", graph, "-frames:v", "1", "-update", "1", str(path))
    return path


def caption(media: Path, text: str | bytes) -> Path:
    """Write the sidecar caption ``media.with_suffix('.txt')`` (bytes are written as is)."""
    side = media.with_suffix(".txt")
    if isinstance(text, bytes):
        side.write_bytes(text)
    else:
        side.write_text(text, encoding="utf-8")
    return side


# The good items of make_dataset: key -> (caption, number of frames at 8 fps or 1 for images).
DATASET: dict[str, str] = {
    "a.mp4": "a test pattern in an mp4",
    "b.webm": "a test pattern in a webm",
    "c.mkv": "a test pattern in a matroska file",
    "clips/d.mov": "a quicktime clip in a subfolder",
    "clips/e.avi": "a motion jpeg clip",
    "f.gif": "an animated gif",
    "g.png": "a still image",
}


def make_dataset(root: str | Path, captions: bool = True) -> Path:
    """A small folder of good media (2 s at 8 fps, 64x48) of every container, one image and,
    when ``captions``, a sidecar ``.txt`` caption for each (see :data:`DATASET`)."""
    root = Path(root)
    for key, text in DATASET.items():
        path = root / key
        if path.suffix in (".png", ".jpg", ".jpeg", ".webp"):
            make_image(path)
        else:
            make_video(path)
        if captions:
            caption(path, text + "\n")
    return root


def make_bad_media(root: str | Path) -> dict[str, str]:
    """Broken items of every kind in ``root``, each with a good caption unless the caption is
    the problem. Returns ``{key: a substring of the expected reason}``. The reasons assume a clip
    of at most 2 s and ``max_pixels`` below 640 * 640 (the ``huge.mp4`` item)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    bad: dict[str, str] = {}
    good = make_video(root / "_source.mp4", seconds=3.0, fps=8)

    def item(name: str, reason: str, text: str | bytes | None = "a caption") -> Path:
        path = root / name
        if text is not None:
            caption(path, text)
        bad[name] = reason
        return path

    item("empty.mp4", "empty").write_bytes(b"")
    # Moov atom first (faststart), then only a third of the media data: frames run out early.
    whole = make_video(root / "_fast.mp4", seconds=3.0, extra=("-movflags", "+faststart"))
    data = whole.read_bytes()
    item("truncated.mp4", "truncated").write_bytes(data[: len(data) // 3])
    # Default mp4: moov atom last; cut right before it.
    data = good.read_bytes()
    moov = data.rfind(b"moov") - 4
    assert moov > 0
    item("nomoov.mp4", "not a readable media file").write_bytes(data[:moov])
    audio = item("audio.mkv", "no video stream")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "flac", str(audio))
    make_video(item("oneframe.mp4", "has 1 frame"), extra=("-frames:v", "1"))
    # Every frame stamped at time 0 and no default frame duration in the track header (its
    # Matroska element id renamed to an unknown one): the file has no frame rate at all.
    zero = make_video(
        root / "_zero.webm", source="testsrc,setpts=0", extra=("-fps_mode", "passthrough")
    )
    data = zero.read_bytes()
    default_duration = bytes.fromhex("23E383")
    assert data.count(default_duration) == 1
    patched = data.replace(default_duration, bytes.fromhex("23E384"))
    item("zerofps.webm", "unknown frame rate").write_bytes(patched)
    zero.unlink()
    make_video(item("huge.mp4", "too large"), seconds=0.5, fps=2, width=640, height=640)
    item("notvideo.mp4", "not a readable media file").write_bytes(b"this is not a video\n" * 50)
    item("notimage.png", "cannot read image").write_bytes(b"not an image at all\n" * 20)
    shutil.copy(good, item("nocaption.mp4", "no caption file", text=None))
    shutil.copy(good, item("blank.mp4", "caption is empty", text="  \n\t\n"))
    shutil.copy(good, item("latin1.mp4", "not UTF-8", text="un caf\xe9".encode("latin-1")))
    caption(root / "orphan.mp4", "a caption without its video")
    bad["orphan.txt"] = "caption without a video file"
    shutil.copy(good, item("unsupported.flv", "unsupported"))
    good.unlink()
    whole.unlink()
    return bad
