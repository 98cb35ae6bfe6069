"""The web demo: ``univid demo`` serves a Gradio page on 127.0.0.1 that generates videos.

The page logic is plain Python, testable without a browser: :class:`Demo` turns the page's
inputs into a video file (:meth:`Demo.run`), and :func:`build_demo` lays the page out around it.
Gradio is an optional extra (``pip install 'univid[demo]'``), imported only here and only when
the page is built. The page fetches nothing from outside: analytics are off, the fonts are the
system's, and no share link is made.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from univid.config.sections import EVAL_MODES, RANGES, mix
from univid.errors import InputError, UnividError
from univid.limits import SEED

# The page's names of the generation modes (the keys are :data:`EVAL_MODES`).
MODE_LABELS = {
    "t2v": "text -> video",
    "i2v": "image -> video",
    "extend": "extend",
    "interpolate": "in-between",
}
assert tuple(MODE_LABELS) == EVAL_MODES
NO_LORA = "none"
VIEW_SCALE = 8  # the videos are tiny: shown nearest-neighbour enlarged
MAX_STEPS_SHOWN = 100  # the slider's end (the model's own default if larger)
MAX_GUIDANCE_SHOWN = 15.0


class Demo:
    """A pipeline and the LoRA adapters the page offers; :meth:`run` makes one video.

    The adapter in use is remembered: a change of choice or scale unloads the old one and loads
    the new one before sampling; the same choice again reuses it.
    """

    def __init__(
        self, pipe: Any, loras: Sequence[str | Path] = (), out_dir: str | Path | None = None
    ) -> None:
        self.pipe = pipe
        self.loras = {str(p): Path(p) for p in loras}
        if NO_LORA in self.loras:
            raise InputError(f"a LoRA folder cannot be named {NO_LORA!r}: give it as ./{NO_LORA}")
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="univid-demo-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.loaded: tuple[str, float] = (NO_LORA, 1.0)
        self.count = itertools.count()

    @property
    def modes(self) -> list[str]:
        """The modes this model can do: all of them, or text to video only if it was trained
        for nothing else."""
        return list(EVAL_MODES) if mix(self.pipe.config)["t2v"] < 1.0 else ["t2v"]

    def use_lora(self, lora: str | None, scale: float) -> None:
        """Make ``lora`` (a folder of :attr:`loras`, or none) at ``scale`` the adapter in use."""
        lora = lora or NO_LORA
        if lora != NO_LORA and lora not in self.loras:
            raise InputError(f"LoRA {lora!r} is not one of {', '.join(self.loras) or 'none'}")
        scale = float(scale)
        if (lora, scale) == self.loaded:
            return
        if self.loaded[0] != NO_LORA:
            self.pipe.unload_lora()
        self.loaded = (NO_LORA, 1.0)  # if loading fails, nothing is loaded
        if lora != NO_LORA:
            self.pipe.load_lora(self.loras[lora], scale=scale)
        self.loaded = (lora, scale)

    def run(
        self,
        prompt: str,
        mode: str,
        image: str | None,
        last_image: str | None,
        video: str | None,
        steps: float,
        guidance: float,
        seed: float,
        lora: str | None = NO_LORA,
        scale: float = 1.0,
    ) -> Path:
        """One video for the page's inputs, written as an mp4; every bad input is a
        :class:`UnividError` with a message for the page. ``image``, ``last_image`` and
        ``video`` are file paths (only those ``mode`` needs are read)."""
        from univid.given import read_given
        from univid.pipeline import check_prompt
        from univid.video import save_video

        prompt = check_prompt(prompt or "")
        if mode not in self.modes:
            raise InputError(f"mode {mode!r} is not one this model can do: {', '.join(self.modes)}")
        steps = _whole("steps", steps)
        RANGES["flow.sample_steps"].check("steps", steps)
        RANGES["flow.guidance"].check("guidance", float(guidance))
        seed = SEED.check("seed", _whole("seed", seed))
        d = self.pipe.config.data
        images, clip = _files(mode, image, last_image, video)
        given = read_given(d.frames, d.height, d.width, d.fps, images, clip)
        self.use_lora(lora, scale)
        frames = self.pipe(
            prompt,
            num_steps=steps,
            guidance_scale=float(guidance),
            seed=seed,
            progress=True,
            **given,
        )
        path = self.out_dir / f"video-{next(self.count)}-{mode}-seed{seed}.mp4"
        return save_video(frames, path, fps=round(d.fps), scale=VIEW_SCALE)


def _whole(name: str, value: float | None) -> int:
    """A whole number from the page (its number fields may give floats), or InputError."""
    if value is None or float(value) != int(value):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _files(
    mode: str, image: str | None, last_image: str | None, video: str | None
) -> tuple[list[tuple[int, str]], str | None]:
    """The images (frame index, path) and video that ``mode`` needs, or InputError naming the
    missing one."""
    needs = {
        "t2v": {},
        "i2v": {"a first image": image},
        "interpolate": {"a first image": image, "a last image": last_image},
        "extend": {"a video to continue": video},
    }[mode]
    missing = [what for what, path in needs.items() if not path]
    if missing:
        raise InputError(f"{MODE_LABELS[mode]} needs {' and '.join(missing)}")
    if mode == "extend":
        return [], video
    return [(0, image), (-1, last_image)][: len(needs)], None


def import_gradio() -> Any:
    """Gradio, with its analytics off; or one line saying how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise UnividError("the demo needs gradio: pip install 'univid[demo]'") from None
    return gradio


def build_demo(pipe: Any, loras: Sequence[str | Path] = ()) -> Any:
    """The page (a ``gradio.Blocks``) for ``pipe`` and the LoRA folders ``loras``."""
    gr = import_gradio()
    demo = Demo(pipe, loras)
    flow = pipe.config.flow
    modes = [(MODE_LABELS[m], m) for m in demo.modes]
    with gr.Blocks(analytics_enabled=False, title="univid") as page:
        gr.Markdown("# univid\nText to video with a single-stream diffusion transformer.")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", elem_id="prompt", lines=2)
                mode = gr.Radio(modes, value="t2v", label="Mode", elem_id="mode")
                image = gr.Image(type="filepath", label="First image", visible=False)
                last_image = gr.Image(type="filepath", label="Last image", visible=False)
                video = gr.Video(label="Video to continue", sources=["upload"], visible=False)
                with gr.Row():
                    most = max(MAX_STEPS_SHOWN, flow.sample_steps)
                    steps = gr.Slider(
                        1, most, value=flow.sample_steps, step=1, label="Steps", elem_id="steps"
                    )
                    most = max(MAX_GUIDANCE_SHOWN, flow.guidance)
                    guidance = gr.Slider(0, most, value=flow.guidance, step=0.1, label="Guidance")
                    seed = gr.Number(0, precision=0, minimum=0, maximum=SEED.hi, label="Seed")
                with gr.Row():
                    lora = gr.Dropdown([NO_LORA, *demo.loras], value=NO_LORA, label="LoRA")
                    scale = gr.Slider(0, 2, value=1.0, step=0.05, label="LoRA scale")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                result = gr.Video(label="Video", elem_id="result", interactive=False)

        def show_inputs(chosen: str) -> list:
            shown = {"i2v": (1, 0, 0), "interpolate": (1, 1, 0), "extend": (0, 0, 1)}
            flags = shown.get(chosen, (0, 0, 0))
            return [gr.update(visible=bool(f)) for f in flags]

        # Gradio finds the progress bar by its parameter's default (the sampler's tqdm bar
        # drives it); it passes the inputs by position, in the order of `inputs` below.
        def generate(
            prompt,
            mode,
            image,
            last_image,
            video,
            steps,
            guidance,
            seed,
            lora,
            scale,
            progress=gr.Progress(track_tqdm=True),  # noqa: B008
        ) -> str:
            inputs = (prompt, mode, image, last_image, video, steps, guidance, seed, lora, scale)
            try:
                return str(demo.run(*inputs))
            except UnividError as exc:
                message = " ".join(str(exc).split())  # one line, as the command line shows it
                raise gr.Error(message, duration=None, print_exception=False) from None

        mode.change(show_inputs, mode, [image, last_image, video])
        inputs = [prompt, mode, image, last_image, video, steps, guidance, seed, lora, scale]
        button.click(generate, inputs, result)
    page.demo = demo  # type: ignore[attr-defined]  # the logic behind the page, for tests
    return page


def check_port(host: str, port: int) -> None:
    """InputError unless ``port`` on ``host`` can be listened on now."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        # create_server's own message repeats the address: say the reason only.
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror
        raise InputError(f"cannot serve on {host}:{port}: {str(reason).lower()}") from None


def serve(
    model: str | Path,
    loras: Sequence[str | Path] = (),
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str = "auto",
) -> None:
    """Load ``model`` and serve its page at http://host:port until interrupted."""
    for folder in loras:
        if not Path(folder).is_dir():
            raise InputError(f"LoRA folder {folder} does not exist")
    check_port(host, port)  # before the model loads: a taken port is one line, at once
    gr = import_gradio()
    from univid.pipeline import Pipeline

    page = build_demo(Pipeline.from_pretrained(model, device=device), loras)
    try:
        launch(page, gr, host, port)
    finally:  # Ctrl-C: the videos made go with the server
        shutil.rmtree(page.demo.out_dir, ignore_errors=True)


def launch(page: Any, gr: Any, host: str, port: int) -> None:
    """Serve ``page`` until interrupted, with no web fonts and no share link."""
    system = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: nothing fetched
    theme = gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])
    print(f"univid demo: http://{host}:{port}", flush=True)
    page.queue().launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        theme=theme,
        quiet=True,
        allowed_paths=[str(page.demo.out_dir)],
    )
