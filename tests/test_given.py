"""Generation with given frames (image to video, in-between, extension) from Python and the CLI,
on one tiny per-frame model trained for a few steps; every bad input is one line, exit 2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from tiny_models import random_model_folder

from univid.cli import main
from univid.data.decode import ClipSpec, read_clip, read_image
from univid.errors import InputError
from univid.given import fit_frame
from univid.pipeline import Pipeline
from univid.video import save_video

PER_FRAME = [f"flow.mix_{m}=1" for m in ("i2v", "extend", "interpolate", "per_frame")]
SIZE = 16  # the tiny preset: 4 frames of 16x16
PROMPT = "a red circle moving right"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("given")
    run = root / "run"
    args = ["train", "tiny", "--out", str(run), "model.patch=1,4,4", *PER_FRAME]
    assert main([*args, "train.steps=4", "train.sample_every=0"]) == 0
    t2v = root / "t2v"  # the same weights, trained (as far as its config says) for t2v only
    t2v.mkdir()
    shutil.copy(run / "model.safetensors", t2v)
    config = json.loads((run / "config.json").read_text())
    config["flow"].update({f"mix_{m}": 0.0 for m in ("i2v", "extend", "interpolate", "per_frame")})
    (t2v / "config.json").write_text(json.dumps(config))
    patch2 = random_model_folder(root / "patch2", "model.patch=2,4,4", *PER_FRAME)
    return {"run": run, "t2v": t2v, "patch2": patch2}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), np.uint8)).save(root / "tall.png")
    Image.fromarray(rng.integers(0, 256, (20, 64, 3), np.uint8)).save(root / "wide.jpg")
    save_video(rng.integers(0, 256, (6, 24, 24, 3), np.uint8), root / "clip.mp4", fps=8)
    save_video(rng.integers(0, 256, (2, 24, 24, 3), np.uint8), root / "short.mp4", fps=8)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (root / "truncated.mp4").write_bytes((root / "clip.mp4").read_bytes()[:300])
    return root


@pytest.fixture(scope="module")
def pipe(models):
    return Pipeline.from_pretrained(models["run"], device="cpu")


def fitted(image: np.ndarray) -> np.ndarray:
    return fit_frame(image, SIZE, SIZE, "test")


def images(seed: int, *shapes: tuple[int, int]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), np.uint8) for shape in shapes]


SAMPLERS = [("euler", 0.0), ("heun", 0.0), ("midpoint", 0.0), ("euler", 0.2)]


@pytest.mark.parametrize(("solver", "cache"), SAMPLERS)
def test_python_modes_return_the_given_frames(pipe, solver, cache):
    first, last = images(1, (SIZE, SIZE), (SIZE, SIZE))
    clip = images(2, (6, 20, 28))[0]  # another size and aspect: fitted like the images
    kw = {"solver": solver, "step_cache": cache, "seed": 5, "num_steps": 3}
    i2v = pipe(PROMPT, images={0: first}, **kw)
    assert i2v.shape == (4, SIZE, SIZE, 3) and np.array_equal(i2v[0], first)
    between = pipe(PROMPT, images={0: first, -1: last}, **kw)
    assert np.array_equal(between[0], first) and np.array_equal(between[3], last)
    extend = pipe(PROMPT, video=clip, **kw)  # default keep: half the model's 4 frames
    assert all(np.array_equal(extend[i], fitted(clip[4 + i])) for i in range(2))
    extend3 = pipe(PROMPT, video=clip, keep=3, **kw)
    assert all(np.array_equal(extend3[i], fitted(clip[3 + i])) for i in range(3))
    # The other frames are generated, not copies of the given ones.
    assert not np.array_equal(i2v[1], first) and not np.array_equal(between[1], last)
    if cache:
        assert pipe.last_cache is not None and pipe.last_cache.calls > 0


def test_given_frames_condition_the_generated_ones(pipe):
    a, b = images(3, (SIZE, SIZE), (SIZE, SIZE))
    with_a, with_b = pipe(PROMPT, images={0: a}), pipe(PROMPT, images={0: b})
    assert not np.array_equal(with_a[1:], with_b[1:])  # same seed: only the given frame differs
    assert np.array_equal(with_a, pipe(PROMPT, images={0: a}))  # and deterministic


def test_sampler_gets_the_given_latent_frames(pipe):
    a, b = images(4, (SIZE, SIZE), (SIZE, SIZE))
    given = pipe.given([{0: a, 3: b}, {1: a}], 2, (4, SIZE, SIZE))
    assert given.mask.tolist() == [[True, False, False, True], [False, True, False, False]]
    pixels = (given.x + 1) * 127.5  # the pixel autoencoder: [-1, 1]
    assert np.allclose(pixels[0, :, 0].permute(1, 2, 0).numpy(), a, atol=1e-3)


def test_images_of_any_size_and_aspect_are_fitted(pipe):
    tall, wide, grey = images(6, (40, 30), (20, 64), (9, 9))
    grey = grey[..., 0]
    out = pipe(PROMPT, images={0: tall, 1: wide, -1: grey})
    assert np.array_equal(out[0], fitted(tall)) and np.array_equal(out[1], fitted(wide))
    assert np.array_equal(out[3], fitted(grey))
    # Scaled to cover, then centre-cropped as `prepare` does: the sides of a wide image go.
    bands = np.zeros((SIZE, 2 * SIZE, 3), np.uint8)
    bands[:, : SIZE // 2], bands[:, SIZE // 2 : -SIZE // 2], bands[:, -SIZE // 2 :] = 255, 100, 0
    assert (pipe(PROMPT, images={0: bands})[0] == 100).all()


BLACK = np.zeros((8, 8, 3), np.uint8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": {4: BLACK}}, "out of range"),
        ({"images": {-5: BLACK}}, "out of range"),
        ({"images": {0: BLACK, -4: BLACK}}, "frame 0 is given twice"),
        ({"images": {0: BLACK.astype(np.float32)}}, "uint8"),
        ({"video": np.zeros((1, 8, 8, 3), np.uint8)}, "too short"),
        ({"video": np.zeros((6, 8, 8, 3), np.uint8), "keep": 4}, "keep must be 1..3"),
        ({"video": np.zeros((6, 8, 8, 3), np.uint8), "keep": 0}, "keep must be 1..3"),
        ({"keep": 2}, "needs a video"),
    ],
)
def test_python_bad_inputs(pipe, kwargs, message):
    with pytest.raises(InputError, match=message):
        pipe(PROMPT, **kwargs)


def test_python_refuses_what_the_model_cannot_do(models):
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    with pytest.raises(InputError, match="text to video only"):
        Pipeline.from_pretrained(models["t2v"], device="cpu")(PROMPT, images={0: image})
    patch2 = Pipeline.from_pretrained(models["patch2"], device="cpu")
    with pytest.raises(InputError, match="temporal patch 2"):
        patch2(PROMPT, images={0: image})
    # Whole groups of the temporal patch can be given.
    assert np.array_equal(patch2(PROMPT, images={0: image, 1: image}, num_steps=2)[1], image)


def generate(models, tmp_path, *args: str, model: str = "run") -> np.ndarray:
    out = tmp_path / "out.npy"
    base = ["generate", PROMPT, "--out", str(out), "--model", str(models[model])]
    assert main([*base, "--steps", "2", *args]) == 0
    return np.load(out)


def test_cli_image_to_video_and_in_between(models, files, tmp_path):
    tall, wide = fitted(read_image(files / "tall.png")), fitted(read_image(files / "wide.jpg"))
    video = generate(models, tmp_path, "--image", str(files / "tall.png"))
    assert video.shape == (4, SIZE, SIZE, 3) and np.array_equal(video[0], tall)
    both = ["--image", str(files / "tall.png"), "--last-image", str(files / "wide.jpg")]
    video = generate(models, tmp_path, *both)
    assert np.array_equal(video[0], tall) and np.array_equal(video[-1], wide)
    video = generate(models, tmp_path, f"--frame=-2={files / 'wide.jpg'}", "--solver", "heun")
    assert np.array_equal(video[2], wide)


def test_cli_continues_a_video(models, files, tmp_path):
    clip = read_clip(files / "clip.mp4", ClipSpec(frames=6, height=SIZE, width=SIZE, fps=8))
    video = generate(models, tmp_path, "--video", str(files / "clip.mp4"))
    assert np.array_equal(video[:2], clip[4:])  # default: half the model's 4 frames
    video = generate(models, tmp_path, "--video", str(files / "clip.mp4"), "--keep", "3")
    assert np.array_equal(video[:3], clip[3:])
    # A clip and a last frame: extension that must end on the image.
    last = ["--frame", f"3={files / 'tall.png'}"]
    video = generate(models, tmp_path, "--video", str(files / "clip.mp4"), *last)
    assert np.array_equal(video[:2], clip[4:])
    assert np.array_equal(video[3], fitted(read_image(files / "tall.png")))


BAD = [
    (["--image", "{f}/missing.png"], "missing.png: file not found"),
    (["--image", "{f}/corrupt.png"], "corrupt.png: cannot read image"),
    (["--image", "{f}/clip.mp4"], "not a PNG, JPEG or WebP"),
    (["--frame", "4={f}/tall.png"], "frame index 4 is out of range"),
    (["--frame=-5={f}/tall.png"], "frame index -5 is out of range"),
    (["--image", "{f}/tall.png", "--frame", "0={f}/wide.jpg"], "frame 0 is given twice"),
    (["--frame", "tall.png"], "must be INDEX=PATH"),
    (["--video", "{f}/short.mp4", "--keep", "3"], "short.mp4: too short"),
    (["--video", "{f}/truncated.mp4"], "truncated.mp4: not a readable media file"),
    (["--video", "{f}/tall.png"], "is one image"),
    (["--video", "{f}/clip.mp4", "--keep", "4"], "keep must be 1..3"),
    (["--video", "{f}/clip.mp4", "--keep", "0"], "--keep: must be an integer"),
    (["--keep", "2"], "keep needs a video"),
    (["--video", "{f}/clip.mp4", "--image", "{f}/tall.png"], "frame 0 is given twice"),
    (["--model", "{t2v}", "--image", "{f}/tall.png"], "text to video only"),
    (["--model", "{patch2}", "--image", "{f}/tall.png"], "temporal patch 2"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[m for _, m in BAD])
def test_cli_bad_input_is_one_line_exit_2(models, files, tmp_path, capsys, args, message):
    paths = {"f": files, "t2v": models["t2v"], "patch2": models["patch2"]}
    args = [a.format(**paths) for a in args]
    out = tmp_path / "out.npy"
    code = main(["generate", PROMPT, "--out", str(out), "--model", str(models["run"]), *args])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1 and err.startswith("univid: error: ")
    assert message in err
