"""Many windows per video in `univid prepare`: shot cuts (synthetic and real), windows that never
span a cut, and the shipped Big Buck Bunny excerpt cut into windows, cached and resumed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
from media import ffmpeg, lavfi, make_video

from univid.cli import main
from univid.data.cache import PrepareSettings
from univid.data.decode import ClipSpec, read_clip
from univid.data.windows import decode_frames, find_cuts, plan_windows

EXCERPT = Path(__file__).parent / "data" / "bigbuckbunny-excerpt.mp4"
REALDATA = Path(
    os.environ.get("UNIVID_REALDATA", Path(__file__).parents[2] / "shared" / "realdata")
)
SPEC = ClipSpec(frames=8, height=16, width=16, fps=25)


def real(name: str) -> Path:
    path = REALDATA / name
    if not path.is_file():
        pytest.skip(f"{name} not found in {REALDATA} (set UNIVID_REALDATA)")
    return path


def test_a_cut_between_two_sources_is_found_and_motion_is_not_a_cut(tmp_path):
    cut = tmp_path / "cut.mp4"
    a, b = lavfi("testsrc2", 1.2, 25, 96, 64), lavfi("testsrc", 1.0, 25, 96, 64)
    ffmpeg(
        "-f", "lavfi", "-i", a, "-f", "lavfi", "-i", b,
        "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast", str(cut),
    )  # fmt: skip
    video = decode_frames(cut, SPEC)
    assert video.decoded == 55 and video.cuts == [30]
    windows = plan_windows(video.source, video.cuts, 8, 4)
    assert [w.start for w in windows] == [0, 4, 8, 12, 16, 20, 30, 34, 38, 42, 46]
    for w in windows:  # no window spans the cut
        first, last = video.source[w.start], video.source[w.start + w.length - 1]
        assert not first < 30 <= last
    for source in ("testsrc2", "testsrc"):  # moving patterns, one shot each
        moving = make_video(tmp_path / f"{source}.mp4", 2.0, 25, 96, 64, source)
        assert decode_frames(moving, SPEC).cuts == []


def test_the_cut_rule_needs_a_jump_far_above_the_median_and_the_floor():
    assert find_cuts([1.0] * 20 + [9.0] + [1.0] * 20) == []  # 9x the median but under the floor
    assert find_cuts([2.0] * 20 + [15.0] + [2.0] * 20) == []  # over the floor but 7.5x
    assert find_cuts([2.0] * 20 + [16.0] + [2.0] * 20) == [21]  # 8x the median and >= 12
    assert find_cuts([0.0] * 30 + [11.0]) == []  # a still video: its noise is not a cut
    assert find_cuts([]) == []


def test_a_shot_shorter_than_a_window_gives_no_window():
    source = list(range(20))
    assert [w.start for w in plan_windows(source, [5, 12], 8, 2)] == [12]
    assert plan_windows(source, [5, 12], 9, 1) == []


@pytest.mark.parametrize(
    "name, cuts",
    [
        ("bikes.mp4", [30, 76, 137, 187, 242]),
        ("carphone_pristine.mp4", []),
        ("bigbuckbunny.mp4", []),
    ],
)
def test_cuts_of_the_real_videos(name, cuts):
    video = decode_frames(real(name), ClipSpec(frames=8, height=16, width=16, fps=8))
    assert video.cuts == cuts


def test_the_shipped_excerpt_is_one_shot():
    assert decode_frames(EXCERPT, SPEC).cuts == []


def test_window_stride_zero_keeps_old_caches_valid():
    assert "window_stride" not in PrepareSettings().recorded()
    assert PrepareSettings(window_stride=8).recorded()["window_stride"] == 8


def test_prepare_cuts_the_excerpt_into_windows_and_resumes(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bunny.mp4").write_bytes(EXCERPT.read_bytes())
    caption = "a cartoon meadow at dawn"
    (src / "bunny.txt").write_text(caption, encoding="utf-8")
    with av.open(str(EXCERPT)) as container:
        assert container.streams.audio  # the excerpt has an audio stream, which is ignored
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 132
    out = tmp_path / "cache"
    args = ["prepare", str(src), "--out", str(out), "--frames", "16", "--height", "36"]
    args += ["--width", "64", "--fps", "25", "--window-stride", "12", "--shard-size", "1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "bunny.mp4: 10 window(s), 132 frames, 0 cut(s)" in err
    index = json.loads((out / "index.json").read_text())
    assert index["videos"] == [{"key": "bunny.mp4", "frames": 132, "cuts": [], "windows": 10}]
    clips = index["clips"]
    assert [c["key"] for c in clips] == [f"bunny.mp4#{k}" for k in range(10)]  # (132-16)//12+1
    assert {c["caption"] for c in clips} == {caption}
    assert all(c["bucket"] == [16, 36, 64] for c in clips)
    from safetensors.torch import load_file

    shard = load_file(out / clips[0]["shard"])
    spec = ClipSpec(frames=16, height=36, width=64, fps=25)
    from univid.data.decode import fit

    for k, clip in enumerate(clips):
        assert clip["source_frames"] == [12 * k, 12 * k + 15]
        expected = np.stack([fit(f, spec) for f in frames[12 * k : 12 * k + 16]])
        got = shard[f"{clip['name']}.latents"]  # pixel autoencoder: RGB in [-1, 1], (3, T, H, W)
        pixels = ((got.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        assert np.array_equal(pixels, expected), k
    assert np.array_equal(
        ((shard["0.0.latents"].permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().astype(np.uint8),
        read_clip(src / "bunny.mp4", spec),
    )
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*")}
    assert main(args) == 0
    assert "0 shard(s) written, 1 reused" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*")} == before
    assert json.loads((out / "index.json").read_text())["clips"] == clips


def test_check_lists_windows_and_a_video_whose_shots_are_all_short_is_bad(tmp_path, capsys):
    src = tmp_path / "src"
    a, b = lavfi("testsrc2", 1.2, 25, 64, 48), lavfi("testsrc", 1.0, 25, 64, 48)
    ffmpeg(
        "-f", "lavfi", "-i", a, "-f", "lavfi", "-i", b,
        "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast",
        str(src.mkdir() or src / "cut.mp4"),
    )  # fmt: skip
    (src / "cut.txt").write_text("two test patterns", encoding="utf-8")
    args = ["prepare", str(src), "--check", "--height", "16", "--width", "16", "--fps", "25"]
    assert main([*args, "--frames", "12", "--window-stride", "6"]) == 0
    out = capsys.readouterr().out
    assert "cut.mp4: 7 window(s), 55 frames, 1 cut(s) at 30" in out  # 4 in 30 frames, 3 in 25
    assert main([*args, "--frames", "40", "--window-stride", "6"]) == 1  # 55 frames, shots < 40
    assert "cut.mp4: no window: every shot is shorter than the clip (longest 30" in (
        capsys.readouterr().out
    )
