"""The bouncing world (univid's long-video world) and how streaming training draws from it."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from univid.config import resolve_config
from univid.data.shapes import (
    CLIP_FRAMES,
    DIRECTION_VECTORS,
    OPEN_FRAMES,
    SPEED_RANGE,
    BounceWorld,
    render_frames,
    sample_bounce,
)
from univid.parallel import Dist
from univid.train.batches import BatchPlan


def simulated(clip, frames: int) -> list[tuple[float, float]]:
    """The path by stepping: move one frame's speed, reflect off a wall when past it."""
    dx, dy = DIRECTION_VECTORS[clip.direction]
    pos, vel = list(clip.start), [dx * clip.speed, dy * clip.speed]
    path = []
    for _ in range(frames):
        path.append(tuple(pos))
        for axis, size in enumerate(clip.size):
            pos[axis] += vel[axis]
            low, high = clip.radius, size - clip.radius
            while not low <= pos[axis] <= high:  # a step longer than the room bounces twice
                pos[axis] = 2 * high - pos[axis] if pos[axis] > high else 2 * low - pos[axis]
                vel[axis] = -vel[axis]
    return path


@pytest.mark.parametrize("seed", range(12))
def test_the_bouncing_path_is_exact_for_any_length(seed):
    clip = sample_bounce(np.random.default_rng(seed))
    for frame, expected in enumerate(simulated(clip, 1000)):
        assert clip.centre(frame) == pytest.approx(expected, abs=1e-9)
    low, high = clip.radius, 32 - clip.radius
    axis = 0 if clip.direction in ("left", "right") else 1
    path = np.array([clip.centre(f)[axis] for f in range(1000)])
    assert path.min() >= low - 1e-9 and path.max() <= high + 1e-9  # always wholly inside
    assert (np.diff(np.sign(np.diff(path))) != 0).sum() >= 20  # it bounces, many times
    steps = np.abs(np.diff(path))
    assert steps.max() == pytest.approx(clip.speed)  # constant speed between bounces
    # The velocity is the direction it leaves each frame in.
    for frame in range(0, 1000, 37):
        v = clip.velocity(frame)[axis]
        nxt = clip.centre(frame + 1e-6)[axis] - clip.centre(frame)[axis]
        assert np.sign(v) == np.sign(nxt)


def test_a_clip_starts_in_its_captions_direction_and_renders_where_it_is():
    for seed in range(8):
        clip = sample_bounce(np.random.default_rng(seed), shape="square")
        assert SPEED_RANGE[0] <= clip.speed <= SPEED_RANGE[1]
        video = render_frames(clip, range(40, 60))
        level = video.max(-1).astype(float)
        ys, xs = np.mgrid[0:32, 0:32] + 0.5
        for i, frame in enumerate(range(40, 60)):
            weight = level[i] / level[i].sum()
            centre = ((weight * xs).sum(), (weight * ys).sum())
            # within the 1/4-px grid of the 4x supersampled rendering
            assert centre == pytest.approx(clip.centre(frame), abs=0.13)


def test_bounce_world_windows():
    world = BounceWorld(frames=16, seed=3, start_share=0.5)
    starts = []
    for i in range(200):
        video, caption, clip, start = world[i]
        assert video.shape == (16, 32, 32, 3)
        assert clip.direction in caption or clip.direction[:2] in caption  # "upward" etc.
        assert 0 <= start <= CLIP_FRAMES[1] - 16
        assert np.array_equal(video, render_frames(clip, range(start, start + 16)))
        starts.append(start)
    opens = sum(s == 0 for s in starts) / len(starts)
    assert 0.38 < opens < 0.62  # start_share of the windows open their clip
    assert len(set(starts)) > 30
    assert np.array_equal(world[7][0], BounceWorld(frames=16, seed=3)[7][0])


STREAM = [
    "model.patch=1,4,4",
    "model.chunk=2",
    "stream.window=4",
    "data.frames=6",
    "data.dataset=bounce",
    "stream.context_noise=0.2",
]


def test_stream_training_draws_context_one_chunk_and_hides_the_rest():
    from univid.train.batches import open_dataset

    cfg, dataset, _ = open_dataset(resolve_config("tiny", STREAM))
    assert isinstance(dataset, BounceWorld)
    plan = BatchPlan(cfg, Dist(), dataset)
    contexts = collections.Counter()
    for position in range(300):
        _, _, _, t, given, *_ = plan.sample(position, position)
        generated = (~given).nonzero().flatten().tolist()
        assert len(generated) == 2 and generated[0] % 2 == 0  # one whole chunk
        k = generated[0]
        contexts[(dataset[position][3] == 0, k)] += 1
        assert (t[:k] <= 0.2).all() and (t[:k] == t[0]).all()  # the context, a little noised
        assert (t[k + 2 :] == 1).all()  # later frames: noise, no loss, unseen by the chunk
        assert 0 < t[k] < 1 and t[k] == t[k + 1]
    # Windows that open a clip see 0, 2 or 4 context frames; later windows the whole window.
    assert {k for (opens, k) in contexts if not opens} == {4}
    assert {k for (opens, k) in contexts if opens} == {0, 2, 4}


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["stream.window=3"], "stream.window"),  # not whole chunks
        (["data.frames=8"], "data.frames"),  # a window and one chunk: 6
        (["model.backbone=encoder", "model.time_mode=token+add"], "model.chunk"),
    ],
)
def test_stream_settings_are_checked_in_one_line(overrides, key):
    from univid.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve_config("tiny", [*STREAM, *overrides])


def test_bounce_world_windows_keep_the_clips_first_frames_as_anchor():
    world = BounceWorld(frames=20, seed=4, start_share=0.5, anchor=4)
    seen = set()
    for i in range(40):
        video, _, clip, start = world[i]
        assert video.shape[0] == 20
        assert np.array_equal(video[:4], render_frames(clip, range(4)))
        assert np.array_equal(video[4:], render_frames(clip, range(4 + start, 20 + start)))
        seen.add(start == 0)
    assert seen == {True, False}  # windows that run on from the anchor, and later ones


def test_stream_training_with_an_anchor():
    from univid.train.batches import open_dataset

    overrides = [*STREAM, "stream.anchor=2", "data.frames=8"]
    cfg, dataset, _ = open_dataset(resolve_config("tiny", overrides))
    assert dataset.anchor == 2
    plan = BatchPlan(cfg, Dist(), dataset)
    firsts = collections.defaultdict(set)
    for position in range(200):
        _, _, _, t, given, *_ = plan.sample(position, position)
        generated = (~given).nonzero().flatten().tolist()
        firsts[dataset[position][3] == 0].add(generated[0])
    assert firsts == {True: {0, 2, 4, 6}, False: {6}}  # later windows: anchor + window first


@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_bounce_clips_open_moving_the_captions_way(size):
    height, width = size
    starts = []
    for seed in range(400):
        clip = sample_bounce(np.random.default_rng([11, seed]), height, width)
        dx, dy = DIRECTION_VECTORS[clip.direction]
        path = np.array([clip.centre(f) for f in range(OPEN_FRAMES + 1)])
        steps = np.diff(path, axis=0) @ np.array([dx, dy], dtype=float)
        assert steps == pytest.approx(clip.speed, abs=1e-9)  # no bounce in the first frames
        axis = 0 if dx else 1
        starts.append((path[0][axis] - clip.radius) / (size[::-1][axis] - 2 * clip.radius))
    # ... and otherwise starts anywhere: both halves of the room are used.
    assert min(starts) < 0.1 and max(starts) > 0.9
