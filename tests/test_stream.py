"""Streaming generation: block-causal attention, the KV cache, chunk-by-chunk sampling, memory
that does not grow with the video, and `univid generate --frames` (SIGINT leaves a playable file).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from univid.build import build_model
from univid.config import apply_overrides, resolve_config
from univid.errors import InputError
from univid.model.dit import DiTStream
from univid.pipeline import Pipeline

STREAMING = ["model.patch=1,4,4", "model.chunk=2", "stream.window=4", "data.frames=6"]


def random_model(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight random: adaLN-Zero starts each block as the identity, where a token's output
    depends on nothing else and every causality or cache test would pass trivially."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


def tiny_dit(chunk: int = 2) -> DiTStream:
    return random_model(
        DiTStream(patch=(1, 4, 4), width=48, depth=2, heads=4, text_dim=16, chunk=chunk)
    )


def inputs(frames: int = 6, batch: int = 2):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, frames, 8, 8, generator=gen)
    text = torch.randn(batch, 5, 16, generator=gen)
    mask = torch.ones(batch, 5, dtype=torch.bool)
    mask[0, 3:] = False  # padding in one caption
    t = torch.rand(batch, frames, generator=gen)
    return x, t, text, mask


def test_kv_cache_equals_one_forward_over_context_and_chunk():
    model = tiny_dit()
    x, t, text, mask = inputs()
    with torch.no_grad():
        full = model(x, t, text, mask)
        for context in (2, 4):  # one or two chunks cached
            cache = model.prefill(x[:, :, :context], t[:, :context], text, mask)
            part = model(x[:, :, context:], t[:, context:], text, mask, cache=cache)
            torch.testing.assert_close(part, full[:, :, context:], rtol=1e-5, atol=1e-5)
        # One cache read by many forwards, as the steps of a chunk's ODE read it: each writes
        # its keys into the cache's room for one chunk, and none sees the one before it.
        cache = model.prefill(x[:, :, :4], t[:, :4], text, mask)
        for step in range(3):
            y, s = x[:, :, 4:] + step, t.clone()
            s[:, 4:] = 0.3 * step
            want = model(torch.cat([x[:, :, :4], y], dim=2), s, text, mask)[:, :, 4:]
            got = model(y, s[:, 4:], text, mask, cache=cache)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        # The cache is what the chunk reads: another context gives another output.
        other = model.prefill(x[:, :, :4] + 1, t[:, :4], text, mask)
        assert (
            model(x[:, :, 4:], t[:, 4:], text, mask, cache=other) - full[:, :, 4:]
        ).abs().max() > 0.1


def test_block_causal_a_later_frame_cannot_change_an_earlier_chunk():
    model = tiny_dit()
    x, t, text, mask = inputs()
    with torch.no_grad():
        out = model(x, t, text, mask)
        later = x.clone()
        later[:, :, 5] += 3.0  # a frame of the last chunk (frames 4-5)
        changed = model(later, t, text, mask)
        assert torch.equal(changed[:, :, :4], out[:, :, :4])
        assert (changed[:, :, 4] - out[:, :, 4]).abs().max() > 0.1  # its own chunk sees it
        earlier = x.clone()
        earlier[:, :, 0] += 3.0  # and a later chunk sees an earlier one
        assert (model(earlier, t, text, mask)[:, :, 4:] - out[:, :, 4:]).abs().max() > 0.1
        # Full attention (chunk 0) lets every frame see every other: the mask is what stops it.
        full = tiny_dit(chunk=0)
        assert (
            full(later, t, text, mask)[:, :, :4] - full(x, t, text, mask)[:, :, :4]
        ).abs().max() > 0.1
    with pytest.raises(ValueError, match="block-causal"):
        full.prefill(x[:, :, :2], t[:, :2], text, mask)


@pytest.fixture(scope="module")
def stream_pipe(text_encoder):
    cfg = apply_overrides(resolve_config("tiny"), STREAMING)
    pipe = Pipeline(random_model(build_model(cfg.model)), text_encoder, cfg)
    pipe.precision = "fp32"
    return pipe


def stream(pipe: Pipeline, frames: int, **kwargs) -> np.ndarray:
    return np.stack(list(pipe.stream("a red circle moving right", frames, **kwargs)))


def test_stream_makes_exactly_the_frames_asked_for_seeded(stream_pipe):
    video = stream(stream_pipe, 9, seed=3)
    assert video.shape == (9, 16, 16, 3) and video.dtype == np.uint8
    assert np.array_equal(video, stream(stream_pipe, 9, seed=3))
    assert not np.array_equal(video, stream(stream_pipe, 9, seed=4))
    # A longer video starts with the same frames: a chunk never depends on what follows.
    assert np.array_equal(stream(stream_pipe, 13, seed=3)[:9], video)


# One branch, both in one batch, or the chunk without its context beside the cached one.
@pytest.mark.parametrize("context_guidance,history", [(1.0, 1.0), (3.0, 1.0), (1.0, 2.5)])
def test_stream_kv_cache_equals_recomputing_the_context(stream_pipe, context_guidance, history):
    def video(prompts, seeds, **kwargs):
        chunks = stream_pipe.stream_batch(
            {0: prompts}, seeds, 12, context_guidance=context_guidance, **kwargs
        )
        return np.concatenate(list(chunks), 1)

    a = video(["a cat", "a dog"], [1, 2], history_guidance=history)
    b = video(["a cat", "a dog"], [1, 2], kv_cache=False, history_guidance=history)
    assert a.shape == (2, 12, 16, 16, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # uint8 rounding of equal floats
    # A batch equals its videos made alone.
    alone = video(["a dog"], [2], history_guidance=history)
    assert np.abs(alone[0].astype(int) - a[1].astype(int)).max() <= 1
    # The later chunks' guidance is what it says: another one gives another video.
    other = np.concatenate(
        list(
            stream_pipe.stream_batch(
                {0: ["a dog"]}, [2], 12, context_guidance=2.0, history_guidance=history
            )
        ),
        1,
    )
    assert np.array_equal(other[0, :2], alone[0, :2])  # the first chunk: flow.guidance
    assert not np.array_equal(other[0, 2:], alone[0, 2:])


def test_a_new_prompt_takes_over_from_its_chunk(stream_pipe):
    base = stream(stream_pipe, 12, seed=0)
    switched = stream(stream_pipe, 12, seed=0, prompt_at={6: "a blue square moving up"})
    assert np.array_equal(base[:6], switched[:6])
    assert not np.array_equal(base[6:], switched[6:])


def live_tensor_bytes() -> int:
    gc.collect()
    return sum(o.nbytes for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_memory_does_not_grow_with_length(stream_pipe):
    """Live tensors while streaming: the most held at any chunk of a 60-frame video is what a
    12-frame video holds (the window and one chunk), not five times as much."""

    def peak(frames: int) -> int:
        most = 0
        for _ in stream_pipe.stream_batch({0: ["a cat"]}, [0], frames):
            most = max(most, live_tensor_bytes())
        return most

    short, long = peak(12), peak(60)
    assert long <= short * 1.01 + 4096, (short, long)


def test_stream_refuses_what_it_cannot_do(stream_pipe, text_encoder):
    with pytest.raises(InputError, match="frames"):
        next(stream_pipe.stream("a cat", 0))
    with pytest.raises(InputError, match="one prompt per seed"):
        next(stream_pipe.stream_batch({0: ["a", "b"]}, [0], 8))
    plain = resolve_config("tiny")
    pipe = Pipeline(build_model(plain.model), text_encoder, plain)
    with pytest.raises(InputError, match="model.chunk"):
        next(pipe.stream("a cat", 8))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, stream_pipe) -> Path:
    folder = tmp_path_factory.mktemp("streaming")
    (folder / "config.json").write_text(stream_pipe.config.to_json())
    save_file(
        {k: v.contiguous() for k, v in stream_pipe.model.state_dict().items()},
        folder / "model.safetensors",
    )
    return folder


def univid(*args: str) -> list[str]:
    return [sys.executable, "-m", "univid", *args]


def frames_in(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_generate_frames_writes_a_streamed_mp4(model_dir, tmp_path):
    out = tmp_path / "long.mp4"
    run = subprocess.run(
        univid(
            "generate",
            "a red circle moving right",
            "--model",
            str(model_dir),
            "--frames",
            "11",
            "--out",
            str(out),
            "--precision",
            "fp32",
            "--prompt-at",
            "6",
            "a blue square",
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert frames_in(out) == 11
    bad = subprocess.run(
        univid(
            "generate",
            "x",
            "--model",
            str(model_dir),
            "--frames",
            "8",
            "--num",
            "2",
            "--out",
            str(out),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "--num does not combine with --frames" in bad.stderr


def test_generate_history_guidance_changes_the_chunks_after_the_first(model_dir, tmp_path):
    def generate(*extra: str) -> subprocess.CompletedProcess:
        args = ["generate", "a red circle moving right", "--model", str(model_dir)]
        return subprocess.run(
            univid(*args, "--precision", "fp32", *extra),
            capture_output=True,
            text=True,
            timeout=300,
        )

    videos = []
    for h in ("1", "3"):
        out = tmp_path / f"h{h}.npy"
        run = generate("--frames", "6", "--history-guidance", h, "--out", str(out))
        assert run.returncode == 0, run.stderr
        videos.append(np.load(out))
    assert videos[0].shape == videos[1].shape == (6, 16, 16, 3)
    assert np.array_equal(videos[0][:2], videos[1][:2])  # the first chunk has no history
    assert not np.array_equal(videos[0][2:], videos[1][2:])
    bad = generate("--history-guidance", "2", "--out", str(tmp_path / "clip.npy"))
    assert bad.returncode == 2 and "--history-guidance needs --frames" in bad.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_stream_leaves_a_playable_file(model_dir, tmp_path, sig):
    out = tmp_path / "long.mp4"
    proc = subprocess.Popen(
        univid(
            "generate",
            "a red circle moving right",
            "--model",
            str(model_dir),
            "--frames",
            "100000",
            "--out",
            str(out),
            "--steps",
            "25",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        # Ctrl-C as at a terminal: a runner started in the background by a shell without job
        # control ignores SIGINT, and its children would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 4000):
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    made = frames_in(out)
    assert 0 < made < 100000
    assert f"{out.name} holds {made} frames" in err


def test_eval_long_judges_streamed_videos(model_dir, tmp_path):
    out = tmp_path / "long.json"
    run = subprocess.run(
        univid(
            "eval",
            "--mode",
            "long",
            "--model",
            str(model_dir),
            "--frames",
            "16",
            "--seeds",
            "1",
            "--prompts",
            "novel",
            "--batch-size",
            "44",
            "--out",
            str(out),
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert report["videos"] == len(report["items"]) == 44
    assert report["settings"]["frames"] == 16 and report["settings"]["chunk"] == 2
    # A random network draws no object: the strict judge fails every video, and says why.
    assert report["right"] == 0 and all(item["failure"] for item in report["items"])
    assert out.with_suffix(".png").stat().st_size > 0  # the drift plot
    assert frames_in_gif(out.with_name("long-failures.gif")) == 16
    plain = subprocess.run(
        univid("eval", "--mode", "long", "--model", "shapes-tiny", "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 2 and "model.chunk" in plain.stderr


def frames_in_gif(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        return image.n_frames


def test_stream_benchmark_runs_end_to_end(model_dir, tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "stream.py"
    plot = tmp_path / "memory.png"
    args = ["--speed", "--memory", "--model", str(model_dir), "--frames", "8", "--repeats", "1"]
    run = subprocess.run(
        [sys.executable, str(script), *args, "--lengths", "8", "16", "--plot", str(plot)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    kinds = [r["what"] for r in rows]
    assert kinds == ["stream", "stream", *["kv_cache_vs_recompute"] * 2, "memory", "memory"]
    assert rows[0]["fps"] > 0 and rows[0]["realtime"] == rows[0]["fps"] / 8
    assert rows[2]["precision"] == "fp32" and rows[2]["max_level_diff"] <= 1
    assert [r["frames"] for r in rows[-2:]] == [8, 16] and plot.stat().st_size > 0


def test_next_chunk_benchmark_prints_its_counts(model_dir):
    script = Path(__file__).parents[1] / "benchmarks" / "stream.py"
    args = ["--next-chunk", "3", "--model", str(model_dir), "--seed-offset", "9"]
    run = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (row,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert row["what"] == "next_chunk" and row["windows"] == 3 and row["seed"] == 9
    assert 0 <= row["stall"] <= row["any"] <= 3 and len(row["any_wilson95"]) == 2


class Recorder(torch.nn.Module):
    """A stand-in network that records the context of every chunk and returns velocity 0 (so
    each chunk comes out as its noise, which tells the chunks apart)."""

    patch, chunk = (1, 4, 4), 2

    def __init__(self) -> None:
        super().__init__()
        self.contexts: list[torch.Tensor] = []

    def prefill(self, x, t, text, mask):
        self.contexts.append(x)
        return None

    def forward(self, x, t, text, mask, cache=None):
        return torch.zeros_like(x)


@pytest.mark.parametrize("anchor", [0, 2])
def test_each_chunk_sees_the_anchor_and_the_window_before_it(anchor):
    from univid.stream import StreamSettings, stream_latents

    model, gen = Recorder(), torch.Generator().manual_seed(0)
    text = (torch.zeros(1, 3, 16), torch.ones(1, 3, dtype=torch.bool))
    settings = StreamSettings(steps=2, guidance=1.0)
    chunks = list(
        stream_latents(
            model,
            lambda frame: (*text, *text),
            lambda n: torch.randn(1, 3, n, 8, 8, generator=gen),
            14,
            4,
            settings,
            anchor,
        )
    )
    video = torch.cat(chunks, dim=2)  # (1, 3, 14, 8, 8)
    assert len(chunks) == 7 and len(model.contexts) == 6  # the first chunk has no context
    for j, context in enumerate(model.contexts, start=1):
        start = 2 * j
        if start <= anchor + 4:  # the whole video so far
            expected = video[:, :, :start]
        else:
            expected = torch.cat([video[:, :, :anchor], video[:, :, start - 4 : start]], dim=2)
        assert torch.equal(context, expected), j


def test_next_chunk_continues_given_frames_seeded(stream_pipe):
    context = stream(stream_pipe, 4, seed=0)[None]  # (1, 4, 16, 16, 3)
    prompt = ["a red circle moving right"]
    chunk = stream_pipe.next_chunk(context, prompt, [5])
    assert chunk.shape == (1, 2, 16, 16, 3) and chunk.dtype == np.uint8
    assert np.array_equal(chunk, stream_pipe.next_chunk(context, prompt, [5]))
    assert not np.array_equal(chunk, stream_pipe.next_chunk(context, prompt, [6]))
    # The context is read: other frames before it, another chunk from the same noise.
    other = stream(stream_pipe, 4, seed=1)[None]
    assert not np.array_equal(chunk, stream_pipe.next_chunk(other, prompt, [5]))
    for bad in (context[:, :3], context.astype(np.float32), context[:, :, :8]):
        with pytest.raises(InputError):
            stream_pipe.next_chunk(bad, prompt, [5])


class WorldStandIn:
    """A pipeline that makes the bouncing world's own next chunk (``frozen``: the context's
    last frame again): what evaluate_next_chunk must score perfect, and all stalls."""

    def __init__(self, pipe: Pipeline, seed: int, frozen: bool) -> None:
        from univid.data.shapes import BounceWorld

        self.config, self.precision, self.device = pipe.config, "fp32", pipe.device
        self.seed, self.frozen = seed, frozen
        self.world = BounceWorld(6, 16, 16, seed, 0.0, 0)

    def next_chunk(self, frames, prompts, seeds, steps=None, context_guidance=None, **settings):
        if self.frozen:
            return np.repeat(frames[:, -1:], 2, axis=1)
        return np.stack([self.world[s - self.seed][0][4:] for s in seeds])


@pytest.mark.parametrize("frozen", [False, True])
def test_next_chunk_evaluation_scores_the_truth_and_catches_a_freeze(stream_pipe, frozen):
    from univid.eval.stream import evaluate_next_chunk

    report = evaluate_next_chunk(
        WorldStandIn(stream_pipe, 70, frozen), windows=24, seed=70, progress=False
    )
    assert report["windows"] == 24 and report["settings"]["context_frames"] == 4
    if frozen:  # every chunk stands still where the world moves on (a fold may hide one)
        assert report["stall"] >= 22 and report["any"] >= 22
    else:
        assert report["any"] == 0 and report["error_median"] == 0.0
    real = evaluate_next_chunk(stream_pipe, windows=3, seed=70, progress=False)
    assert real["windows"] == 3 and 0 <= real["stall"] <= real["any"] <= 3


class TwoVelocities(Recorder):
    """Velocity 1 for a chunk after its (cached) context, 3 for a chunk alone."""

    def prefill(self, x, t, text, mask):
        return "cache"

    def forward(self, x, t, text, mask, cache=None):
        return torch.full_like(x, 3.0 if cache is None else 1.0)


@pytest.mark.parametrize("history", [1.0, 2.5, 0.0])
def test_history_guidance_pushes_a_chunk_away_from_itself_without_context(history):
    from univid.stream import StreamSettings, sample_chunk

    text = (torch.zeros(1, 3, 16), torch.ones(1, 3, dtype=torch.bool))
    s = StreamSettings(steps=4, guidance=1.0, history_guidance=history)
    x = torch.randn(1, 3, 2, 8, 8)
    later = sample_chunk(TwoVelocities(), x, torch.zeros(1, 3, 4, 8, 8), (*text, *text), s)
    # Velocity 3 + h (1 - 3) from t = 1 to 0: the chunk moves by minus that.
    assert torch.allclose(later, x - (3.0 - 2.0 * history))
    first = sample_chunk(TwoVelocities(), x, None, (*text, *text), s)  # no context: no history
    assert torch.allclose(first, x - 3.0)
