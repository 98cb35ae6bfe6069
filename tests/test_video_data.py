"""The real-video input layer: listing sources, decoding clips, the dataset and the checker.

Every video here is a real encoded file made by ffmpeg (see media.py), tiny so that the module
runs in seconds on two cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from media import (
    DATASET,
    caption,
    decode_all,
    ffmpeg,
    frame_indices,
    frame_means,
    make_bad_media,
    make_dataset,
    make_image,
    make_index_video,
    make_video,
)
from PIL import Image

from univid.data import BadSample
from univid.data import decode as decode_module
from univid.data.decode import ClipSpec, MediaInfo, fit, probe, read_clip, verify
from univid.data.sources import SourceItem, list_sources
from univid.data.videos import VideoDataset, check_sources
from univid.errors import InputError

SPEC = ClipSpec(frames=8, height=32, width=32, fps=4, max_pixels=320 * 320)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    return root, make_bad_media(root)


@pytest.fixture(scope="module")
def index_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    videos = {
        "24fps": make_index_video(root / "i24.mp4", frames=30, fps=24),
        "4fps": make_index_video(root / "i4.mp4", frames=8, fps=4),
        # 12 s with a keyframe every 8 frames: clips starting late are reached by seeking.
        "long": make_index_video(root / "long.mp4", frames=96, fps=8, step=2, extra=("-g", "8")),
    }
    means = {name: frame_means(path) for name, path in videos.items()}
    for m in means.values():
        assert (np.diff(m) > 1).all()  # every frame tells its index
    return videos, means


def call(fn, *args, **kwargs):
    """fn(...), asserting that the only exception it may raise is BadSample."""
    try:
        return fn(*args, **kwargs)
    except BadSample:
        raise
    except Exception as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"{fn.__name__} raised {type(exc).__name__} instead of BadSample: {exc}")


# --- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(DATASET))
def test_each_container_decodes_to_the_exact_frames(good, key):
    path = good / key
    clip = read_clip(path, SPEC)
    assert clip.dtype == np.uint8
    info = probe(path)
    if key.endswith(".png"):
        assert clip.shape == (1, 32, 32, 3)
        assert info == MediaInfo("image", 64, 48, 0.0, 1, 0.0)
        reference = [np.array(Image.open(path).convert("RGB"))]
    else:
        assert clip.shape == (8, 32, 32, 3)
        assert (info.kind, info.width, info.height, info.frames) == ("video", 64, 48, 16)
        assert info.fps == pytest.approx(8, abs=0.5) and info.duration == pytest.approx(2, abs=0.1)
        reference = decode_all(path)[0:16:2]  # 8 fps resampled to 4: every other frame
    expected = np.stack([fit(frame, SPEC) for frame in reference])
    np.testing.assert_array_equal(clip, expected)
    assert clip.std() > 20  # a test pattern, not a blank frame


def test_fps_resampling_takes_the_last_frame_at_or_before_each_time(index_videos):
    videos, means = index_videos
    down = read_clip(videos["24fps"], ClipSpec(frames=10, height=24, width=32, fps=8))
    assert frame_indices(down, means["24fps"]) == list(range(0, 30, 3))
    up = read_clip(videos["4fps"], ClipSpec(frames=14, height=24, width=32, fps=8))
    assert frame_indices(up, means["4fps"]) == [i // 2 for i in range(14)]
    same = read_clip(videos["4fps"], ClipSpec(frames=8, height=24, width=32, fps=4))
    assert frame_indices(same, means["4fps"]) == list(range(8))


def test_stride_takes_every_nth_decoded_frame(index_videos):
    videos, means = index_videos
    spec = ClipSpec(frames=5, height=24, width=32, fps=1, stride=4)
    assert frame_indices(read_clip(videos["24fps"], spec), means["24fps"]) == [0, 4, 8, 12, 16]
    starts = set()
    for seed in range(8):
        got = frame_indices(
            read_clip(videos["24fps"], spec, np.random.default_rng(seed)), means["24fps"]
        )
        assert got == list(range(got[0], got[0] + 17, 4)) and 0 <= got[0] <= 30 - 17
        starts.add(got[0])
    assert len(starts) > 1
    with pytest.raises(BadSample, match=r"has 30 frames .* needs 33"):
        read_clip(videos["24fps"], ClipSpec(frames=9, height=24, width=32, fps=1, stride=4))


def test_random_temporal_start_is_uniform_over_valid_starts(index_videos):
    videos, means = index_videos
    spec = ClipSpec(frames=4, height=24, width=32, fps=8)
    starts = []
    for seed in range(40):
        got = frame_indices(
            read_clip(videos["24fps"], spec, np.random.default_rng(seed)), means["24fps"]
        )
        assert got == [got[0] + 3 * k for k in range(4)]
        starts.append(got[0])
    assert min(starts) >= 0 and max(starts) <= 29 - 9
    assert len(set(starts)) >= 8  # spread over the 21 valid starts


def test_seeking_into_a_long_video_gives_the_same_frames(index_videos, monkeypatch):
    videos, means = index_videos
    spec = ClipSpec(frames=4, height=24, width=32, fps=4)
    reference = decode_all(videos["long"])
    seeked = 0
    for seed in range(6):
        clip = read_clip(videos["long"], spec, np.random.default_rng(seed))
        got = frame_indices(clip, means["long"])
        assert got == [got[0] + 2 * k for k in range(4)]
        seeked += got[0] / 8 > decode_module.SEEK_AFTER
        np.testing.assert_array_equal(clip, np.stack([fit(reference[i], spec) for i in got]))
        # The same clip decoded from the top, with seeking turned off.
        monkeypatch.setattr(decode_module, "SEEK_AFTER", 1e9)
        again = read_clip(videos["long"], spec, np.random.default_rng(seed))
        monkeypatch.undo()
        np.testing.assert_array_equal(clip, again)
    assert seeked >= 2


def _bars(path):
    """A 64x32 picture: red quarter, green half, blue quarter (left to right)."""
    bars = np.zeros((32, 64, 3), np.uint8)
    bars[:, :16] = (255, 0, 0)
    bars[:, 16:48] = (0, 255, 0)
    bars[:, 48:] = (0, 0, 255)
    Image.fromarray(bars).save(path)
    return path


def test_crop_keeps_the_centre_and_pad_adds_black_bars(tmp_path):
    png = _bars(tmp_path / "bars.png")
    mp4 = tmp_path / "bars.mp4"
    ffmpeg(
        *("-loop", "1", "-i", str(png), "-t", "1", "-r", "4"),
        *("-c:v", "libx264rgb", "-qp", "0", "-pix_fmt", "rgb24", str(mp4)),
    )
    for path in (png, mp4):
        crop = read_clip(path, ClipSpec(frames=2, height=32, width=32, fps=4))
        assert crop.shape[1:] == (32, 32, 3)
        np.testing.assert_allclose(crop[0].reshape(-1, 3).mean(0), (0, 255, 0), atol=2)
        pad = read_clip(path, ClipSpec(frames=2, height=32, width=32, fps=4, resize="pad"))
        assert pad.shape[1:] == (32, 32, 3)
        frame = pad[0].astype(int)
        assert (frame[:8] == 0).all() and (frame[24:] == 0).all()  # 8-row bars top and bottom
        assert frame[8:24].min(axis=2).max() < 5 and frame[8:24].max(axis=2).min() > 200
        np.testing.assert_allclose(frame[10:22, 1:6].mean((0, 1)), (255, 0, 0), atol=3)
        np.testing.assert_allclose(frame[10:22, 10:22].mean((0, 1)), (0, 255, 0), atol=3)
        np.testing.assert_allclose(frame[10:22, 26:31].mean((0, 1)), (0, 0, 255), atol=3)
        tall = read_clip(path, ClipSpec(frames=1, height=32, width=8, fps=4, resize="pad"))
        assert (tall[0, :14] == 0).all() and (tall[0, 18:] == 0).all()  # 64x32 -> 8x4


def test_random_crop_is_reproducible_and_differs_from_the_centre(good):
    spec = ClipSpec(frames=4, height=24, width=24, fps=8)
    centred = read_clip(good / "a.mp4", spec)
    first = read_clip(good / "a.mp4", spec, np.random.default_rng(5))
    np.testing.assert_array_equal(first, read_clip(good / "a.mp4", spec, np.random.default_rng(5)))
    clips = [read_clip(good / "a.mp4", spec, np.random.default_rng(s)) for s in range(4)]
    assert any(not np.array_equal(c, centred) for c in clips)
    assert len({c.tobytes() for c in clips}) > 1
    image = [read_clip(good / "g.png", spec, np.random.default_rng(s)) for s in range(6)]
    assert all(c.shape == (1, 24, 24, 3) for c in image)
    assert len({c.tobytes() for c in image}) > 1  # a random horizontal offset in a 32x24 image


def test_images_give_one_frame(tmp_path):
    png = make_image(tmp_path / "i.png", width=80, height=40)
    rgb = np.array(Image.open(png).convert("RGB"))
    Image.fromarray(rgb).save(tmp_path / "i.jpg", quality=95)
    Image.fromarray(rgb).save(tmp_path / "i.webp", lossless=True)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")  # palette image
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "a.png")  # with alpha
    for name in ("i.png", "i.jpg", "i.webp", "p.png", "a.png"):
        clip = read_clip(tmp_path / name, SPEC)
        assert clip.shape == (1, 32, 32, 3) and clip.dtype == np.uint8, name
        assert np.abs(clip.astype(int) - read_clip(png, SPEC)).mean() < 12, name
        assert probe(tmp_path / name) == MediaInfo("image", 80, 40, 0.0, 1, 0.0)
    data = (tmp_path / "i.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadSample, match="cannot read image: image file is truncated"):
        call(read_clip, tmp_path / "cut.jpg", SPEC)
    with pytest.raises(BadSample, match="80x40 are too large"):
        read_clip(png, ClipSpec(frames=1, height=8, width=8, fps=1, max_pixels=1000))


# --- bad media ----------------------------------------------------------------------------------


def test_every_bad_kind_is_reported_with_its_reason(bad):
    root, expected = bad
    items, problems = check_sources(root, SPEC)
    reasons = dict(problems)
    assert len(reasons) == len(problems) == len(items) == len(expected)
    for key, why in expected.items():
        assert key in reasons, key
        assert why in reasons[key], (key, reasons[key])
        assert "\n" not in reasons[key]
    spec = ClipSpec(frames=8, height=32, width=32, fps=4, max_pixels=320 * 320)
    for item in items:
        if item.path is None or item.problem is not None:
            continue
        for rng in (None, np.random.default_rng(0)):
            with pytest.raises(BadSample, match=expected[item.key]):
                call(read_clip, item.path, spec, rng)
    # Damage visible in the headers is found without decoding a frame.
    for key in ("empty.mp4", "nomoov.mp4", "audio.mkv", "zerofps.webm", "huge.mp4"):
        with pytest.raises(BadSample, match=expected[key]):
            call(probe, root / key, 320 * 320)
    for key in ("notvideo.mp4", "notimage.png", "truncated.mp4"):
        with pytest.raises(BadSample, match=expected[key]):
            call(verify, root / key)
    # The header of a truncated file is fine; decoding fails part way.
    assert probe(root / "truncated.mp4").frames == 24
    assert probe(root / "huge.mp4").width == 640  # allowed by the default limit
    with pytest.raises(BadSample, match="file not found"):
        call(read_clip, root / "missing.mp4", spec)
    with pytest.raises(BadSample, match="not a file"):
        call(probe, root)


def test_list_sources_reports_caption_problems(bad):
    root, _ = bad
    items = {item.key: item for item in list_sources(root)}
    assert items["nocaption.mp4"].caption is None
    assert items["latin1.mp4"] == SourceItem(
        "latin1.mp4", root / "latin1.mp4", None, "caption is not UTF-8 text", {}
    )
    assert items["blank.mp4"].problem == "caption is empty"
    assert items["orphan.txt"].path is None and items["orphan.txt"].caption
    assert items["truncated.mp4"].problem is None and items["truncated.mp4"].caption == "a caption"
    assert list(items) == sorted(items)


def test_folder_listing(tmp_path):
    make_video(tmp_path / "sub" / "b.MP4", seconds=1)
    caption(tmp_path / "sub" / "b.MP4", "\ufeff  upper-case extension \n")
    make_video(tmp_path / "a.mp4", seconds=1)
    caption(tmp_path / "a.mp4", "with metadata next to it")
    (tmp_path / "a.json").write_text("{}")  # companion metadata: not an item
    (tmp_path / "notes.md").write_text("not data")
    (tmp_path / ".hidden.mp4").write_bytes(b"")
    items = list_sources(tmp_path)
    assert [(i.key, i.caption, i.problem) for i in items] == [
        ("a.mp4", "with metadata next to it", None),
        ("sub/b.MP4", "upper-case extension", None),
    ]
    assert list_sources(tmp_path / "sub")[0].key == "b.MP4"


# --- tables -------------------------------------------------------------------------------------


def test_csv_table(good, tmp_path):
    table = good / "clips" / "meta.csv"
    table.write_text(
        "path,caption,fps_hint,source\n"
        'd.mov,"a clip, with a comma",8,camera\n'
        f"{good / 'a.mp4'},an absolute path,,web\n"
        "../b.webm,  up a folder  ,,\n"
        "gone.mp4,a missing file,,\n"
        "e.avi,,,\n"
        ",a row without a file,,\n"
        "e.avi,a second caption for the same file,,\n"
        "d.mov,unquoted, comma,x,y\n"
        "meta.csv,a table is not media,,\n",
        encoding="utf-8",
    )
    items = {item.key: item for item in list_sources(table)}
    d = items["d.mov"]
    assert (d.path, d.caption, d.problem) == (
        good / "clips" / "d.mov",
        "a clip, with a comma",
        None,
    )
    assert d.extra == {"fps_hint": "8", "source": "camera"}
    assert items[(good / "a.mp4").as_posix()].path == good / "a.mp4"
    assert items["../b.webm"].caption == "up a folder" and items["../b.webm"].problem is None
    assert items["gone.mp4"].problem == "file not found: 'gone.mp4'"
    assert items["e.avi"].problem == "caption is empty"
    assert items["row 7"].path is None and items["row 7"].problem == "missing path"
    assert items["e.avi (row 8)"].problem is None
    assert "unquoted caption" in items["d.mov (row 9)"].problem
    assert "unsupported file type '.csv'" in items["meta.csv"].problem
    dataset = VideoDataset(table, SPEC)
    usable = [i for i, item in enumerate(dataset.items) if item.problem is None]
    assert len(usable) == 4
    for i in usable:
        video, text = dataset[i]
        assert video.shape == (8, 32, 32, 3) and text == dataset.items[i].caption


def test_jsonl_table(good, tmp_path):
    table = tmp_path / "data.jsonl"
    lines = [
        json.dumps({"path": str(good / "a.mp4"), "caption": "absolute", "score": 0.5}),
        "",
        '{"path": "x.mp4", "caption": broken json',
        "[1, 2]",
        json.dumps({"caption": "no path here"}),
        json.dumps({"path": "rel/c.mkv", "caption": 7}),
        json.dumps({"path": "rel/c.mkv", "caption": "relative", "tags": ["x"]}),
    ]
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "c.mkv").write_bytes((good / "c.mkv").read_bytes())
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = {item.key: item for item in list_sources(table)}
    assert items[(good / "a.mp4").as_posix()].extra == {"score": 0.5}
    assert items["row 3"].problem.startswith("invalid JSON")
    assert items["row 4"].problem == "line is not a JSON object"
    assert items["row 5"].problem == "missing path"
    assert items["rel/c.mkv"].problem == "caption is not text"
    ok = items["rel/c.mkv (row 7)"]
    assert (ok.path, ok.caption, ok.problem, ok.extra) == (
        tmp_path / "rel" / "c.mkv",
        "relative",
        None,
        {"tags": ["x"]},
    )
    assert read_clip(ok.path, SPEC).shape == (8, 32, 32, 3)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "not found"),
        ("nocol.csv", "file,text\na.mp4,hello\n", "needs 'path' and 'caption' columns"),
        ("empty.csv", "", "needs 'path' and 'caption' columns"),
        ("quote.csv", 'path,caption\na.mp4,"never closed\n', "not valid CSV"),
        ("latin.csv", "path,caption\na.mp4,caf\xe9\n".encode("latin-1"), "not UTF-8"),
        ("junk.jsonl", "not json\nalso not\n", "not valid JSONL"),
        ("nofields.jsonl", '{"file": "a.mp4", "text": "x"}\n', "needs 'path' and 'caption'"),
        ("data.txt", "a.mp4 hello\n", "must be a folder, a .csv or a .jsonl table"),
        ("nowhere", None, "not found"),
    ],
)
def test_bad_tables_raise_one_line_input_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        list_sources(path)
    assert "\n" not in str(info.value) and repr(str(path)) in str(info.value)


# --- dataset and checker ------------------------------------------------------------------------


def test_video_dataset(good, bad):
    dataset = VideoDataset(good, SPEC)
    assert len(dataset) == len(DATASET)
    assert [item.key for item in dataset.items] == sorted(DATASET)
    for i, item in enumerate(dataset.items):
        video, text = dataset[i]
        assert video.dtype == np.uint8 and text == DATASET[item.key]
        assert video.shape == (8, 32, 32, 3)
        if item.key.endswith(".png"):  # an image is a still clip: its one frame, repeated
            assert all(np.array_equal(frame, video[0]) for frame in video)
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    shuffled = VideoDataset(good, SPEC, seed=3, random_crop=True)
    again = VideoDataset(good, SPEC, seed=3, random_crop=True)
    crops = [shuffled[i][0] for i in range(len(shuffled))]
    assert all(np.array_equal(c, again[i][0]) for i, c in enumerate(crops))
    assert any(not np.array_equal(c, dataset[i][0]) for i, c in enumerate(crops))

    root, expected = bad
    broken = VideoDataset(root, SPEC, random_crop=True)
    assert len(broken) == len(expected)
    for i, item in enumerate(broken.items):
        with pytest.raises(BadSample, match=expected[item.key]) as info:
            call(broken.__getitem__, i)
        assert str(info.value).startswith(f"{item.key}: ")


def test_check_sources_on_good_data(good, capsys):
    items, problems = check_sources(good, SPEC, progress=True)
    assert problems == [] and len(items) == len(DATASET)
    assert "checking" in capsys.readouterr().err
    _, problems = check_sources(good, ClipSpec(frames=20, height=32, width=32, fps=8))
    assert {key for key, _ in problems} == set(DATASET) - {"g.png"}
    assert all("too short: the video has 16 frames" in why for _, why in problems)


def test_clip_spec_is_validated():
    for bad_args in (
        {"frames": 0},
        {"fps": 0},
        {"stride": -1},
        {"resize": "stretch"},
        {"max_pixels": 0},
    ):
        with pytest.raises(ValueError):
            ClipSpec(**{"frames": 4, "height": 8, "width": 8, "fps": 4, **bad_args})
    assert ClipSpec(frames=4, height=8, width=8, fps=0, stride=2).stride == 2
