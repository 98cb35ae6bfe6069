"""The bundled model through the Python API: shapes, determinism, batching, and quality."""

import numpy as np
import pytest

import univid
from univid.data.shapes import all_prompts, canonical_prompt, render
from univid.errors import InputError
from univid.eval.judge import judge
from univid.eval.modes import conditioning_clip, given_indices, judge_mode


@pytest.fixture(scope="module")
def pipe():
    return univid.Pipeline.from_pretrained("shapes-tiny", device="cpu")


def test_one_prompt_one_video_same_seed_same_bits(pipe):
    a = pipe("a red circle moving right", seed=0)
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, pipe("a red circle moving right", seed=0))
    assert not np.array_equal(a, pipe("a red circle moving right", seed=1))


def test_a_batch_equals_its_videos_made_alone(pipe):
    batch = pipe(["a green square moving up", "a blue triangle moving left"], seed=4, num_videos=2)
    assert batch.shape == (4, 8, 32, 32, 3)
    # CPU matrix kernels may block a batch of 4 differently from 1 (AVX-512 MKL does), which
    # moves a few pixels by one level at most; the videos are otherwise the same bits.
    for k, (prompt, seed) in enumerate(
        [("a green square moving up", 4), ("a blue triangle moving left", 5)]
    ):
        alone = pipe(prompt, seed=seed).astype(int)
        diff = np.abs(batch[2 * k + (seed - 4)].astype(int) - alone)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_bad_arguments(pipe):
    with pytest.raises(InputError, match="empty"):
        pipe("")
    with pytest.raises(InputError, match="at most"):
        pipe("x" * 10_000)
    with pytest.raises(InputError, match="num_steps"):
        pipe("a red circle", num_steps=0)


def test_bundled_model_follows_prompts(pipe):
    """A small slice of `univid eval`: 12 prompts covering every colour, shape and direction."""
    cases = [
        ("red", "circle", "right"),
        ("green", "square", "up"),
        ("blue", "triangle", "left"),
        ("yellow", "circle", "down"),
        ("magenta", "square", "left"),
        ("cyan", "triangle", "up"),
        ("white", "circle", "down"),
        ("red", "triangle", "right"),
        ("green", "circle", "left"),
        ("blue", "square", "down"),
        ("yellow", "triangle", "up"),
        ("magenta", "circle", "right"),
    ]
    videos = pipe.generate([canonical_prompt(*c) for c in cases], list(range(len(cases))))
    right = sum(
        (j.colour, j.shape, j.direction) == c for j, c in zip((judge(v) for v in videos), cases)
    )
    # The bundled model gets all three right in 73.5 % of held-out videos (horizontal direction
    # is its weak point: docs/conditioning.md); 7 of 12 is far above chance (1/84 each).
    assert right >= 7, f"{right}/12 prompts right on all three attributes"


@pytest.mark.parametrize("mode", ["i2v", "extend", "interpolate"])
def test_bundled_model_continues_given_frames(pipe, mode):
    """A small slice of `univid eval --mode`: 8 prompts given frames of held-out world clips
    (development seeds 900..907, not the published ones)."""
    d = pipe.config.data
    cases = all_prompts()[::11][:8]
    clips = [conditioning_clip(*c, 900 + k, d.height, d.width) for k, c in enumerate(cases)]
    indices = given_indices(mode, d.frames)
    given = [{i: render(clip, d.frames, d.height, d.width)[i] for i in indices} for clip in clips]
    videos = pipe.generate(
        [canonical_prompt(*c) for c in cases], [900 + k for k in range(8)], given=given
    )
    verdicts = [judge_mode(mode, v, clip, g)[0] for v, clip, g in zip(videos, clips, given)]
    assert all(np.array_equal(v[i], g[i]) for v, g in zip(videos, given) for i in g)
    assert sum(v is None for v in verdicts) >= 6, verdicts
