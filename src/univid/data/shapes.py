"""The shapes world: a procedural, seeded, captioned video set that ships with univid.

Each clip is a black background with one object (circle, square or triangle) of one of seven
colours moving in a straight line at constant speed (left, right, up or down), wholly inside the
frame. Clip ``i`` of seed ``s`` is always the same clip, so the set needs no storage.

Geometry is in continuous pixel units (the frame spans [0, W] x [0, H], pixel centres at
``i + 0.5``). The object's "radius" r is half the side of its bounding box; the frames are
rendered 4x supersampled, so edges are anti-aliased and the box fill ratio of each shape is
close to its continuous value (square 1, circle pi/4, triangle 1/2).

Beyond that world lie concepts the bundled model never saw (:data:`NOVEL_SHAPES`, the
diamond: a square turned 45 degrees; :data:`NOVEL_COLOURS`, orange). ``ShapesWorld`` draws
them only with ``novel_fraction`` > 0; its default stream is the old world, clip for clip.
:data:`PROMPT_SETS` names the evaluation prompts: ``world`` (the old 84) and ``novel`` (every
prompt with at least one novel attribute).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 30),
    "blue": (40, 80, 255),
    "yellow": (240, 220, 30),
    "magenta": (220, 40, 220),
    "cyan": (30, 220, 220),
    "white": (240, 240, 240),
}
# Concepts outside the world that the bundled model was trained on; never drawn by default.
NOVEL_SHAPES: tuple[str, ...] = ("diamond",)
NOVEL_COLOURS: dict[str, tuple[int, int, int]] = {"orange": (250, 130, 20)}
ALL_SHAPES: tuple[str, ...] = SHAPES + NOVEL_SHAPES
ALL_COLOURS: dict[str, tuple[int, int, int]] = {**COLOURS, **NOVEL_COLOURS}
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
# Unit step of each direction in (x, y) image coordinates; y grows downwards.
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}

# Sizes at the reference frame size of 32 px; other sizes scale linearly.
REFERENCE_SIZE = 32
RADIUS_RANGE = (4.0, 7.0)
DISTANCE_RANGE = (10.0, 16.0)
SUPERSAMPLE = 4
# The third word of the seed [seed, index, NOVEL_STREAM] that decides whether a clip is novel;
# a stream of its own, so the old-world clips of a mixed stream are the default stream's.
NOVEL_STREAM = 27_182

_SHAPE_WORDS = {
    "circle": ("circle", "disc", "ball"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
}
_MOVING = ("moving", "travelling", "sliding", "gliding")
_TO_THE = {"left": "to the left", "right": "to the right", "up": "upward", "down": "downward"}
_WARD = {"left": "leftward", "right": "rightward", "up": "upward", "down": "downward"}
_TEMPLATES = (
    "a {colour} {shape} {moving} {direction}",
    "{colour} {shape} moves {to_the}",
    "the {shape} is {colour} and goes {ward}",
    "a {shape}, {colour}, {moving} {direction}",
    "one {colour} {shape} heading {direction}",
    "a {colour} {shape} that moves {to_the}",
)


def canonical_prompt(colour: str, shape: str, direction: str) -> str:
    """The phrasing used for evaluation prompts, e.g. 'a red circle moving right'."""
    return f"a {colour} {shape} moving {direction}"


def novel_pairs() -> list[tuple[str, str]]:
    """Every (colour, shape) of the full vocabulary with a novel colour or shape, fixed order."""
    return [
        (c, s) for c in ALL_COLOURS for s in ALL_SHAPES if c in NOVEL_COLOURS or s in NOVEL_SHAPES
    ]


# Evaluation prompt sets: "world" is the 84 prompts of the world the bundled model learnt,
# "novel" every prompt with at least one novel attribute (11 colour-shape pairs x 4 directions).
PROMPT_SETS: tuple[str, ...] = ("world", "novel")


def all_prompts(prompt_set: str = "world") -> list[tuple[str, str, str]]:
    """Every (colour, shape, direction) triple of a prompt set (:data:`PROMPT_SETS`), in a
    fixed order."""
    if prompt_set == "world":
        return [(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS]
    if prompt_set == "novel":
        return [(c, s, d) for c, s in novel_pairs() for d in DIRECTIONS]
    raise ValueError(f"prompt set must be one of {PROMPT_SETS}, got {prompt_set!r}")


@dataclass(frozen=True)
class ShapeClip:
    """The parameters of one clip (continuous pixel units)."""

    shape: str
    colour: str
    direction: str
    radius: float
    distance: float
    start: tuple[float, float]  # (x, y) centre in the first frame

    def centre(self, frame: int, frames: int) -> tuple[float, float]:
        """Object centre in ``frame`` of ``frames``: constant speed along a straight line."""
        frac = frame / max(frames - 1, 1)
        dx, dy = DIRECTION_VECTORS[self.direction]
        return (
            self.start[0] + dx * self.distance * frac,
            self.start[1] + dy * self.distance * frac,
        )


def sample_clip(
    rng: np.random.Generator,
    height: int = 32,
    width: int = 32,
    shape: str | None = None,
    colour: str | None = None,
    direction: str | None = None,
) -> ShapeClip:
    """Draw clip parameters; any attribute may be fixed. The whole path stays in the frame."""
    scale = min(height, width) / REFERENCE_SIZE
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or list(COLOURS)[rng.integers(len(COLOURS))]
    direction = direction or DIRECTIONS[rng.integers(len(DIRECTIONS))]
    radius = float(rng.uniform(*RADIUS_RANGE)) * scale
    distance = float(rng.uniform(*DISTANCE_RANGE)) * scale
    dx, dy = DIRECTION_VECTORS[direction]
    centre = []
    for step, size in ((dx, width), (dy, height)):
        # Along the motion axis the centre needs room for the whole path.
        room = distance if step else 0.0
        low, high = radius, size - radius - room
        start = float(rng.uniform(low, max(low, high)))
        centre.append(start + room if step < 0 else start)
    return ShapeClip(shape, colour, direction, radius, distance, (centre[0], centre[1]))


def _coverage(
    clip: ShapeClip | BounceClip, cx: float, cy: float, height: int, width: int
) -> np.ndarray:
    """Fraction of each pixel covered by the object centred at (cx, cy): (H, W) in [0, 1]."""
    s = SUPERSAMPLE
    ys = (np.arange(height * s) + 0.5) / s - cy  # (Hs,)
    xs = (np.arange(width * s) + 0.5) / s - cx  # (Ws,)
    x, y = xs[None, :], ys[:, None]
    r = clip.radius
    if clip.shape == "circle":
        inside = x * x + y * y <= r * r
    elif clip.shape == "square":
        inside = (np.abs(x) <= r) & (np.abs(y) <= r)
    elif clip.shape == "diamond":
        inside = np.abs(x) + np.abs(y) <= r
    else:
        # Upward-pointing isosceles triangle with apex (0, -r) and base y = r from x=-r to x=r.
        inside = (y <= r) & (np.abs(x) <= (y + r) / 2)
    return inside.reshape(height, s, width, s).mean(axis=(1, 3))


def render(clip: ShapeClip, frames: int = 8, height: int = 32, width: int = 32) -> np.ndarray:
    """Render ``clip`` as uint8 video of shape (T, H, W, 3)."""
    return _draw(clip, [clip.centre(f, frames) for f in range(frames)], height, width)


def _draw(
    clip: ShapeClip | BounceClip, centres: list[tuple[float, float]], height: int, width: int
) -> np.ndarray:
    """``clip``'s object (a ShapeClip or BounceClip) at each of ``centres``: uint8
    (len(centres), H, W, 3)."""
    colour = np.asarray(ALL_COLOURS[clip.colour], dtype=np.float32)
    video = np.empty((len(centres), height, width, 3), dtype=np.uint8)
    for i, centre in enumerate(centres):
        cover = _coverage(clip, *centre, height, width)
        video[i] = np.rint(cover[..., None] * colour).astype(np.uint8)
    return video


def caption(clip: ShapeClip, rng: np.random.Generator) -> str:
    """A caption in one of several phrasings, with synonyms."""
    template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    words = _SHAPE_WORDS[clip.shape]
    return template.format(
        colour=clip.colour,
        shape=words[rng.integers(len(words))],
        moving=_MOVING[rng.integers(len(_MOVING))],
        direction=clip.direction,
        to_the=_TO_THE[clip.direction],
        ward=_WARD[clip.direction],
    )


class ShapesWorld:
    """An endless, indexable, seeded stream of captioned clips.

    ``world[i]`` returns ``(video uint8 (T, H, W, 3), caption, clip)`` and depends only on
    ``(seed, i)``, so a run can resume at any index and two workers can split indices.

    With ``novel_fraction`` > 0 that share of the clips (drawn from [seed, i, NOVEL_STREAM])
    shows a colour-shape pair of :func:`novel_pairs`, uniformly: the full vocabulary conditioned
    on a novel colour or shape. The other clips are those of the default stream, index for index.
    """

    def __init__(
        self,
        frames: int = 8,
        height: int = 32,
        width: int = 32,
        seed: int = 0,
        novel_fraction: float = 0.0,
    ) -> None:
        if not 0.0 <= novel_fraction <= 1.0:
            raise ValueError(f"novel_fraction must be in [0, 1], got {novel_fraction}")
        self.frames, self.height, self.width, self.seed = frames, height, width, seed
        self.novel_fraction = novel_fraction

    def is_novel(self, index: int) -> bool:
        """Whether clip ``index`` shows a novel concept (always False at novel_fraction 0)."""
        if not self.novel_fraction:
            return False
        draw = np.random.default_rng([self.seed, index, NOVEL_STREAM]).random()
        return bool(draw < self.novel_fraction)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, ShapeClip]:
        rng = np.random.default_rng([self.seed, index])
        fixed: dict[str, str] = {}
        if self.is_novel(index):
            pairs = novel_pairs()
            fixed["colour"], fixed["shape"] = pairs[rng.integers(len(pairs))]
        clip = sample_clip(rng, self.height, self.width, **fixed)
        return render(clip, self.frames, self.height, self.width), caption(clip, rng), clip

    def batch(self, indices: range | list[int]) -> tuple[np.ndarray, list[str]]:
        """Videos (B, T, H, W, 3) uint8 and their captions."""
        items = [self[i] for i in indices]
        return np.stack([v for v, _, _ in items]), [c for _, c, _ in items]


# The bouncing world (univid's long-video world): the object starts moving in the caption's
# direction at a constant speed and bounces off the frame's edges, for as long as asked.
# Speeds in pixels per frame at the reference size; the straight world moves 1.4-2.3.
SPEED_RANGE = (1.5, 2.5)
# Lengths of the bouncing world's training clips; a training sample is a window of one of them.
CLIP_FRAMES = (32, 64)
# A clip's object moves the caption's way for at least its first OPEN_FRAMES frames before its
# first bounce, so that the caption says what a viewer sees it start doing (one chunk of a
# streaming model: where the object starts is the first chunk's to choose). Without this room,
# a third of the clips bounced within 4 frames and a fifth of first chunks moved against their
# caption.
OPEN_FRAMES = 4


@dataclass(frozen=True)
class BounceClip:
    """A clip of the bouncing world: the object moves along the caption's axis at ``speed``
    pixels per frame and is reflected at the frame's edges (its centre stays in [r, size - r]
    on that axis, so the whole object is always inside)."""

    shape: str
    colour: str
    direction: str  # the direction it starts in
    radius: float
    speed: float
    start: tuple[float, float]  # (x, y) centre in frame 0
    size: tuple[int, int]  # (width, height) of the frame it bounces in

    def _phase(self, frame: float) -> tuple[int, float, float]:
        """(axis of the motion, position along the unfolded straight path measured from the
        low wall, modulo one round trip 2 span; span = size - 2r, the room to move in)."""
        dx, dy = DIRECTION_VECTORS[self.direction]
        axis = 0 if dx else 1
        span = self.size[axis] - 2 * self.radius
        start = self.start[axis] - self.radius
        return axis, (start + (dx + dy) * self.speed * frame) % (2 * span), span

    def centre(self, frame: float, frames: int = 0) -> tuple[float, float]:
        """Object centre at ``frame`` (any real >= 0; ``frames`` is ignored: the path does not
        depend on the clip's length). Unfolded, the path is a straight line; folding it into
        [r, size - r] is the exact reflection, a triangle wave of period 2 (size - 2r)."""
        axis, unfolded, span = self._phase(frame)
        along = self.radius + (unfolded if unfolded <= span else 2 * span - unfolded)
        return (along, self.start[1]) if axis == 0 else (self.start[0], along)

    def velocity(self, frame: float) -> tuple[float, float]:
        """(dx, dy) pixels per frame at ``frame``: the start direction, reversed after each
        bounce (at a bounce itself, the direction it leaves in)."""
        dx, dy = DIRECTION_VECTORS[self.direction]
        _, unfolded, span = self._phase(frame)
        sign = 1 if unfolded < span else -1
        return dx * sign * self.speed, dy * sign * self.speed


def sample_bounce(
    rng: np.random.Generator,
    height: int = 32,
    width: int = 32,
    shape: str | None = None,
    colour: str | None = None,
    direction: str | None = None,
) -> BounceClip:
    """Draw a bouncing clip; any attribute may be fixed. The start is uniform over the places
    the object fits and from which it moves OPEN_FRAMES frames the caption's way before its
    first bounce."""
    scale = min(height, width) / REFERENCE_SIZE
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or list(COLOURS)[rng.integers(len(COLOURS))]
    direction = direction or DIRECTIONS[rng.integers(len(DIRECTIONS))]
    radius = float(rng.uniform(*RADIUS_RANGE)) * scale
    speed = float(rng.uniform(*SPEED_RANGE)) * scale
    room = OPEN_FRAMES * speed
    low = [radius + room * max(-d, 0) for d in DIRECTION_VECTORS[direction]]
    high = [
        size - radius - room * max(d, 0)
        for size, d in zip((width, height), DIRECTION_VECTORS[direction])
    ]
    start = tuple(float(rng.uniform(lo, hi)) for lo, hi in zip(low, high))
    return BounceClip(shape, colour, direction, radius, speed, start, (width, height))  # type: ignore[arg-type]


def render_frames(
    clip: BounceClip, frames: range | list[int], height: int = 32, width: int = 32
) -> np.ndarray:
    """Render the frames ``frames`` of a bouncing ``clip`` as uint8 (len(frames), H, W, 3)."""
    return _draw(clip, [clip.centre(f) for f in frames], height, width)


class BounceWorld:
    """The bouncing world as training windows: ``world[i]`` is ``(video uint8 (frames, H, W,
    3), caption, clip, start)``, drawn from ``(seed, i)``: the clip's first ``anchor`` frames,
    then ``frames - anchor`` frames from ``anchor + start`` on, of a clip of CLIP_FRAMES frames.

    The caption names the clip's start direction, as a prompt does; later windows move either
    way. ``start_share`` of the windows open their clip (start 0: the frames run on from the
    anchor without a gap), where a long generation begins with less context; the rest start
    anywhere later in it.
    """

    def __init__(
        self,
        frames: int = 16,
        height: int = 32,
        width: int = 32,
        seed: int = 0,
        start_share: float = 0.35,
        anchor: int = 0,
    ) -> None:
        if not 1 <= frames - anchor <= CLIP_FRAMES[0] - anchor or anchor < 0:
            raise ValueError(f"windows must be 1..{CLIP_FRAMES[0]} frames, got {frames}")
        self.frames, self.height, self.width, self.seed = frames, height, width, seed
        self.start_share, self.anchor = start_share, anchor

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, BounceClip, int]:
        rng = np.random.default_rng([self.seed, index])
        clip = sample_bounce(rng, self.height, self.width)
        text = caption(clip, rng)  # type: ignore[arg-type]
        length = int(rng.integers(CLIP_FRAMES[0], CLIP_FRAMES[1] + 1))
        start = 0
        if rng.random() >= self.start_share:
            start = int(rng.integers(1, length - self.frames + 1))
        first = self.anchor + start
        window = [*range(self.anchor), *range(first, first + self.frames - self.anchor)]
        return render_frames(clip, window, self.height, self.width), text, clip, start
