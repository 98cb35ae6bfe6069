import numpy as np

from univid.data.shapes import (
    COLOURS,
    DIRECTION_VECTORS,
    ShapesWorld,
    all_prompts,
    canonical_prompt,
)


def test_clips_are_deterministic_and_stay_in_frame():
    world = ShapesWorld(seed=7)
    for i in range(200):
        video, caption, clip = world[i]
        assert video.shape == (8, 32, 32, 3) and video.dtype == np.uint8
        assert 4 <= clip.radius <= 7 and 10 <= clip.distance <= 16
        for f in range(8):
            cx, cy = clip.centre(f, 8)
            assert clip.radius <= cx <= 32 - clip.radius
            assert clip.radius <= cy <= 32 - clip.radius
        assert clip.colour in caption
        # The object's brightest pixel has its palette colour; the rest is background.
        assert tuple(video.reshape(-1, 3).max(axis=0)) <= COLOURS[clip.colour]
    again, caption_again, _ = world[3]
    assert np.array_equal(again, world[3][0]) and caption_again == world[3][1]
    assert not np.array_equal(world[3][0], ShapesWorld(seed=8)[3][0])


def test_motion_is_straight_and_in_the_caption_direction():
    world = ShapesWorld(seed=1)
    for i in range(50):
        video, _, clip = world[i]
        weights = video.max(axis=-1).astype(float)  # (T, H, W)
        ys, xs = np.mgrid[0:32, 0:32] + 0.5
        cx = (weights * xs).sum((1, 2)) / weights.sum((1, 2))
        cy = (weights * ys).sum((1, 2)) / weights.sum((1, 2))
        dx, dy = DIRECTION_VECTORS[clip.direction]
        moved = np.array([cx[-1] - cx[0], cy[-1] - cy[0]])
        assert np.allclose(moved, np.array([dx, dy]) * clip.distance, atol=0.6)


def test_captions_vary_and_prompts_cover_the_world():
    world = ShapesWorld()
    captions = {world[i][1].replace(world[i][2].colour, "C") for i in range(300)}
    assert len(captions) > 30
    prompts = all_prompts()
    assert len(prompts) == 7 * 3 * 4 == len(set(prompts))
    assert canonical_prompt("red", "circle", "right") == "a red circle moving right"


def test_other_sizes_scale():
    video, _, clip = ShapesWorld(frames=4, height=16, width=24, seed=0)[0]
    assert video.shape == (4, 16, 24, 3)
    assert 2 <= clip.radius <= 3.5
