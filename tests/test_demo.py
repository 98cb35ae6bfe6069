"""The web demo: its page logic (every mode, errors as messages, LoRA switching) on a tiny
per-frame model, and the page itself served by ``univid demo`` and driven in headless Chromium.

``UNIVID_DEMO_MODEL`` runs the browser test on another model (e.g. ``shapes-tiny``), and
``UNIVID_DEMO_SCREENSHOT`` keeps a copy of its screenshot (docs/assets/demo.png is made so)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import random_model_folder

from univid.build import resolve_model_dir
from univid.cli import main
from univid.config import load_config_file, resolve_config
from univid.config.sections import EVAL_MODES
from univid.data.decode import ClipSpec, read_clip
from univid.demo import MODE_LABELS, NO_LORA, VIEW_SCALE, Demo
from univid.errors import InputError
from univid.given import fit_frame
from univid.pipeline import Pipeline
from univid.train import finetune
from univid.video import save_video

PER_FRAME = ["model.patch=1,4,4", *(f"flow.mix_{m}=1" for m in ("i2v", "extend", "interpolate"))]
FRAMES, SIZE = 4, 16  # the tiny preset
PROMPT = "a red circle moving right"
QUIET = ["train.sample_every=0", "train.val_every=0", "train.device=cpu"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return random_model_folder(tmp_path_factory.mktemp("demo") / "model", *PER_FRAME)


@pytest.fixture(scope="module")
def demo(model, tmp_path_factory) -> Demo:
    pipe = Pipeline.from_pretrained(model, device="cpu")
    return Demo(pipe, out_dir=tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Smooth images (video compression keeps them) and a clip to continue."""
    root = tmp_path_factory.mktemp("files")
    ramp = np.linspace(0, 255, 24, dtype=np.uint8)
    first = np.stack(
        [ramp[:, None].repeat(24, 1), ramp[None].repeat(24, 0), np.full((24, 24), 60, np.uint8)], -1
    )
    Image.fromarray(first).save(root / "first.png")
    Image.fromarray(255 - first).save(root / "last.png")
    clip = np.stack([np.roll(first, 3 * t, axis=1) for t in range(6)])
    save_video(clip, root / "clip.mp4", fps=8)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    return root


def decode(path: Path | str, frames: int, side: int) -> np.ndarray:
    """The frames of an mp4 written at ``VIEW_SCALE``, back at the model's size (block centres)."""
    spec = ClipSpec(frames=frames, height=side * VIEW_SCALE, width=side * VIEW_SCALE, fps=8.0)
    video = read_clip(path, spec)
    assert video.shape == (frames, side * VIEW_SCALE, side * VIEW_SCALE, 3)
    return video[:, VIEW_SCALE // 2 :: VIEW_SCALE, VIEW_SCALE // 2 :: VIEW_SCALE]


def near(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a.astype(float) - b.astype(float)).mean()) < 12


def fitted(path: Path) -> np.ndarray:
    return fit_frame(np.asarray(Image.open(path).convert("RGB")), SIZE, SIZE, "test")


# --------------------------------------------------------------------------------------------
# The page's logic, without a browser


@pytest.mark.parametrize("mode", EVAL_MODES)
def test_each_mode_makes_a_video_with_its_given_frames(demo, files, mode):
    first, last, clip = files / "first.png", files / "last.png", files / "clip.mp4"
    path = demo.run(PROMPT, mode, str(first), str(last), str(clip), 2, 3.0, 7, NO_LORA, 1.0)
    assert path.suffix == ".mp4" and path.parent == demo.out_dir
    video = decode(path, FRAMES, SIZE)
    assert video.max() > 100 and video.std() > 20  # noise of a random model, not blank
    given = {
        "t2v": {},
        "i2v": {0: fitted(first)},
        "interpolate": {0: fitted(first), FRAMES - 1: fitted(last)},
        "extend": dict(enumerate(read_clip(clip, ClipSpec(2, SIZE, SIZE, 8.0), end=True))),
    }[mode]
    for index in range(FRAMES):
        if index in given:
            assert near(video[index], given[index]), index
        else:
            assert not near(video[index], fitted(first)), index


def test_same_inputs_same_video_new_file(demo):
    a = demo.run(PROMPT, "t2v", None, None, None, 2, 3.0, 5, NO_LORA, 1.0)
    b = demo.run(PROMPT, "t2v", None, None, None, 2.0, 3.0, 5.0, None, 1.0)  # the page's floats
    c = demo.run(PROMPT, "t2v", None, None, None, 2, 3.0, 6, NO_LORA, 1.0)
    assert len({a, b, c}) == 3  # a browser never shows an old file for a new video
    assert near(decode(a, FRAMES, SIZE), decode(b, FRAMES, SIZE))
    assert not near(decode(a, FRAMES, SIZE), decode(c, FRAMES, SIZE))


@pytest.mark.parametrize(
    ("prompt", "mode", "inputs", "numbers", "message"),
    [
        ("", "t2v", (None, None, None), (2, 3.0, 0), "prompt is empty"),
        ("  \n ", "t2v", (None, None, None), (2, 3.0, 0), "prompt is empty"),
        (PROMPT, "i2v", (None, None, None), (2, 3.0, 0), "image -> video needs a first image"),
        (
            PROMPT,
            "interpolate",
            ("first.png", None, None),
            (2, 3.0, 0),
            "in-between needs a last image",
        ),
        (PROMPT, "extend", ("first.png", None, None), (2, 3.0, 0), "extend needs a video"),
        (PROMPT, "i2v", ("corrupt.png", None, None), (2, 3.0, 0), "corrupt.png"),
        (PROMPT, "extend", (None, None, "first.png"), (2, 3.0, 0), "is one image"),
        (PROMPT, "zoom", (None, None, None), (2, 3.0, 0), "mode 'zoom' is not one"),
        (PROMPT, "t2v", (None, None, None), (0, 3.0, 0), "steps must be"),
        (PROMPT, "t2v", (None, None, None), (2.5, 3.0, 0), "steps must be a whole number"),
        (PROMPT, "t2v", (None, None, None), (2, -1.0, 0), "guidance must be"),
        (PROMPT, "t2v", (None, None, None), (2, 3.0, -1), "seed must be"),
        (PROMPT, "t2v", (None, None, None), (2, 3.0, None), "seed must be a whole number"),
    ],
)
def test_bad_input_is_a_message(demo, files, prompt, mode, inputs, numbers, message):
    paths = [str(files / p) if p else None for p in inputs]
    before = sorted(demo.out_dir.iterdir())
    with pytest.raises(InputError, match=message):
        demo.run(prompt, mode, *paths, *numbers, NO_LORA, 1.0)
    assert sorted(demo.out_dir.iterdir()) == before


class FakePipe:
    """Records the LoRA calls; makes grey videos."""

    def __init__(self, *overrides: str) -> None:
        self.config = resolve_config("tiny", list(overrides))
        self.calls: list[tuple] = []

    def load_lora(self, path, scale=1.0):
        self.calls.append(("load", Path(path).name, scale))

    def unload_lora(self):
        self.calls.append(("unload",))

    def __call__(self, prompt, **kwargs):
        return np.full((FRAMES, SIZE, SIZE, 3), 128, np.uint8)


def test_lora_changes_between_videos_are_applied(tmp_path):
    pipe = FakePipe(*PER_FRAME)
    demo = Demo(pipe, [tmp_path / "a", "b"], out_dir=tmp_path)
    a, b = str(tmp_path / "a"), "b"
    expected = [
        (NO_LORA, 1.0, []),
        (a, 1.0, [("load", "a", 1.0)]),
        (a, 1, []),  # the same adapter at the same scale is kept
        (a, 0.5, [("unload",), ("load", "a", 0.5)]),
        (b, 0.5, [("unload",), ("load", "b", 0.5)]),
        (None, 0.5, [("unload",)]),
        (NO_LORA, 2.0, []),
    ]
    for lora, scale, calls in expected:
        pipe.calls.clear()
        demo.run(PROMPT, "t2v", None, None, None, 2, 3.0, 0, lora, scale)
        assert pipe.calls == calls, (lora, scale)
    with pytest.raises(InputError, match="LoRA 'c' is not one of"):
        demo.run(PROMPT, "t2v", None, None, None, 2, 3.0, 0, "c", 1.0)


def test_a_real_adapter_changes_the_video_and_goes_away(tmp_path):
    # A base whose weights are all random (its output head too, so adapters on the blocks
    # reach the video), and an adapter fine-tuned from it for one step at a high rate.
    random_model_folder(tmp_path / "base", *PER_FRAME, std=0.2)
    tuned = tmp_path / "tuned"
    finetune(str(tmp_path / "base"), [*QUIET, "train.steps=1", "train.lr=1", "train.warmup=1",
             "train.ema_decay=0", "lora.rank=2"], str(tuned))  # fmt: skip
    pipe = Pipeline.from_pretrained(tmp_path / "base", device="cpu")
    demo = Demo(pipe, [tuned], out_dir=tmp_path / "videos")
    plain = decode(demo.run(PROMPT, "t2v", None, None, None, 2, 3.0, 1, None, 1.0), FRAMES, SIZE)
    adapted = demo.run(PROMPT, "t2v", None, None, None, 2, 3.0, 1, str(tuned), 1.0)
    assert pipe.lora is not None and pipe.lora["path"] == str(tuned)
    assert float(np.abs(decode(adapted, FRAMES, SIZE) - plain.astype(float)).mean()) > 5
    again = demo.run(PROMPT, "t2v", None, None, None, 2, 3.0, 1, NO_LORA, 1.0)
    assert pipe.lora is None and np.array_equal(decode(again, FRAMES, SIZE), plain)


def test_a_text_only_model_offers_text_to_video_only(tmp_path):
    assert Demo(FakePipe(), out_dir=tmp_path).modes == ["t2v"]
    assert Demo(FakePipe(*PER_FRAME), out_dir=tmp_path).modes == list(EVAL_MODES)
    assert list(MODE_LABELS) == list(EVAL_MODES)


def test_without_gradio_the_demo_says_how_to_install_it(model, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert main(["demo", "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err == "univid: error: the demo needs gradio: pip install 'univid[demo]'\n"


def test_a_missing_lora_folder_or_a_taken_port_is_one_line(model, tmp_path, capsys):
    missing = tmp_path / "no-adapter"
    assert main(["demo", "--model", str(model), "--lora", str(missing)]) == 2
    assert capsys.readouterr().err == f"univid: error: LoRA folder {missing} does not exist\n"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["demo", "--model", str(model), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == f"univid: error: cannot serve on 127.0.0.1:{port}: address already in use\n"


def test_demo_port_out_of_range_is_a_usage_error(capsys):
    assert main(["demo", "--port", "70000"]) == 2
    assert "--port: must be an integer in [1, 65535]" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The page in a real browser: headless Chromium from the system's packages, driven by Selenium


def browser_or_skip():
    """Selenium's Chrome driver on the system's Chromium and chromedriver, or a skip saying
    which part is missing."""
    for module, extra in (("gradio", "demo"), ("selenium", "test")):
        pytest.importorskip(module, reason=f"the browser test needs {module}: univid[{extra}]")
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("the browser test needs Chromium and chromedriver (apt-get install chromium "
                    "chromium-driver)")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1000")
    return webdriver.Chrome(options=options, service=Service(driver))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_served(url: str, server: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"univid demo exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"univid demo did not serve {url} in {seconds} s")


STEPS = 20
# Notes whether the page ever showed the sampler's progress ("sampling - 35.0%").
SEE_PROGRESS = """
window.sawProgress = false;
new MutationObserver(() => {
  window.sawProgress ||= /sampling - \\d/.test(document.body.innerText);
}).observe(document.body, {childList: true, subtree: true, characterData: true});
"""


def page_text(driver) -> str:
    return driver.find_element("tag name", "body").text


@pytest.mark.slow
def test_the_page_in_a_browser(model, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser_or_skip()
    model = os.environ.get("UNIVID_DEMO_MODEL") or str(model)
    frames = load_config_file(resolve_model_dir(model) / "config.json").data.frames
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        [sys.executable, "-m", "univid", "demo", "--model", model, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_served(url, server)
        driver.get(url)
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        prompt = wait.until(lambda d: d.find_element("css selector", "#prompt textarea"))
        # The inputs of a mode are shown only for it.
        assert "First image" not in page_text(driver)
        driver.find_element("xpath", "//label[contains(., 'in-between')]").click()
        wait.until(lambda d: "Last image" in page_text(d) and "First image" in page_text(d))
        driver.find_element("xpath", "//label[contains(., 'text -> video')]").click()
        wait.until(lambda d: "First image" not in page_text(d))

        prompt.send_keys(PROMPT)
        steps = driver.find_element("css selector", "#steps input[type=number]")
        steps.clear()
        steps.send_keys(str(STEPS), Keys.TAB)  # long enough to show the progress
        assert steps.get_attribute("value") == str(STEPS)
        driver.execute_script(SEE_PROGRESS)
        driver.find_element("css selector", "#generate").click()
        src = wait.until(
            lambda d: [v.get_attribute("src") for v in d.find_elements("css selector", "video")]
        )[0]
        assert src.startswith(url), src  # served by the demo itself
        assert driver.execute_script("return window.sawProgress"), "no progress bar was shown"
        served = tmp_path / "served.mp4"
        with urllib.request.urlopen(src, timeout=10) as response:
            served.write_bytes(response.read())
        side = load_config_file(resolve_model_dir(model) / "config.json").data.height
        video = decode(served, frames, side)
        assert len(video) == frames and video.max() > 100  # the model's frames, not blank
        time.sleep(0.5)  # the player's first frame
        driver.save_screenshot(str(tmp_path / "demo.png"))
        if os.environ.get("UNIVID_DEMO_SCREENSHOT"):
            shutil.copy(tmp_path / "demo.png", os.environ["UNIVID_DEMO_SCREENSHOT"])
        # Everything the page loaded came from the demo: it works without internet.
        loaded = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert loaded and all(n.startswith(url) for n in loaded), loaded

        prompt.send_keys(Keys.CONTROL, "a", Keys.DELETE)  # typed: clear() skips the page's events
        driver.find_element("css selector", "#generate").click()
        wait.until(lambda d: "prompt is empty" in page_text(d))
        assert "Traceback" not in driver.page_source
    finally:
        driver.quit()
        server.send_signal(signal.SIGINT)  # as Ctrl-C: the demo removes its videos
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        err = server.stderr.read()
    assert "Traceback" not in err, err
