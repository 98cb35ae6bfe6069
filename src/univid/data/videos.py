"""Real videos as a training dataset: a folder or table of captioned media decoded on demand.

:class:`VideoDataset` is what the trainer indexes: item ``i`` is ``(uint8 video (T, H, W, 3),
caption)`` or a :class:`~univid.data.BadSample` naming the item and saying why it is unusable.
:func:`check_sources` decodes every item once, ahead of training, and lists the bad ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from univid.data import BadSample
from univid.data.decode import ClipSpec, read_clip, verify
from univid.data.sources import SourceItem, is_image, list_sources


class VideoDataset:
    """Indexable dataset of a folder/table for pixel-space training: item i -> (uint8 video
    (T, H, W, 3), caption); raises BadSample.

    Every listed item is kept, including those :func:`list_sources` already found a problem
    with, so that the trainer counts and logs them. Every item is ``spec.frames`` frames, so
    batches stack: an image is a still clip, its frame repeated (a cache made by ``univid
    prepare`` keeps images as 1-frame clips in their own buckets instead). With
    ``random_crop`` the clip start and crop offset of item ``i`` come from
    ``np.random.default_rng([seed, i])``: the same item always gives the same clip."""

    def __init__(
        self, src: str | Path, spec: ClipSpec, seed: int = 0, random_crop: bool = False
    ) -> None:
        self.src, self.spec, self.seed, self.random_crop = Path(src), spec, seed, random_crop
        self.items: list[SourceItem] = list_sources(src)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        if not -len(self.items) <= index < len(self.items):
            raise IndexError(f"item {index} of a dataset of {len(self.items)}")
        index %= len(self.items)
        item = self.items[index]
        if item.problem is not None or item.path is None or not item.caption:
            raise BadSample(f"{item.key}: {item.problem or 'no caption'}")
        rng = np.random.default_rng([self.seed, index]) if self.random_crop else None
        try:
            video = read_clip(item.path, self.spec, rng)
        except BadSample as exc:
            raise BadSample(f"{item.key}: {exc}") from None
        if video.shape[0] < self.spec.frames:  # an image
            video = np.repeat(video, self.spec.frames, axis=0)
        return video, item.caption


def check_sources(
    src: str | Path, spec: ClipSpec, progress: bool = False, full: bool = True
) -> tuple[list[SourceItem], list[tuple[str, str]]]:
    """Decode every item once; returns (all items, [(key, reason) for each unusable one]).

    Each usable-looking item must give its first clip (:func:`read_clip` with no rng); with
    ``full`` every frame of each video is also decoded, which finds files truncated or damaged
    past the first clip."""
    items = list_sources(src)
    bad: list[tuple[str, str]] = []
    shown = items
    if progress:
        from tqdm import tqdm

        shown = tqdm(items, desc="checking", unit="file", file=sys.stderr)
    for item in shown:
        if item.problem is not None or item.path is None:
            bad.append((item.key, item.problem or "no media file"))
            continue
        try:
            read_clip(item.path, spec)
            if full and not is_image(item.path):
                verify(item.path, spec.max_pixels)
        except BadSample as exc:
            bad.append((item.key, str(exc)))
    return items, bad
