"""A fixed validation loss: held-out clips, fixed noise, a fixed grid of t values.

The training loss is noisy (random clips, t and noise every step) and its scale depends on the
time distribution. This one scores the same held-out shapes-world clips, the same noise and the
same 8 values of t for every model with the same data shape, so numbers from different runs,
backbones and seeds compare directly (SD3, Esser et al. 2024, found it tracks sample quality).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from univid.config import Config
from univid.data.shapes import ShapesWorld
from univid.flow import flow_loss
from univid.text import TextEncoder, pad_states

VAL_SEED = 918_273_645  # the held-out world; training worlds use train.seed (small integers)
VAL_TIMES = tuple((k + 0.5) / 8 for k in range(8))  # midpoints of 8 equal bins of [0, 1]


class ValidationSet:
    """``clips`` held-out clips of the config's data shape, with their noise and captions.

    :meth:`from_cache` scores the first clips of a prepared cache instead (one group per
    bucket); they are also trained on, so that loss tracks fitting rather than generalisation.
    """

    def __init__(self, cfg: Config, text_encoder: TextEncoder, clips: int | None = None) -> None:
        d = cfg.data
        self.clips = clips or cfg.train.val_clips
        world = ShapesWorld(
            d.frames, d.height, d.width, seed=VAL_SEED, novel_fraction=d.novel_fraction
        )
        videos, captions = world.batch(range(self.clips))
        x = torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
        text, mask = text_encoder.encode(captions)
        self.groups = [self._group(x, text, mask)]

    @staticmethod
    def _group(x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> tuple:
        gen = torch.Generator().manual_seed(VAL_SEED)
        noise = torch.randn((len(VAL_TIMES), *x.shape), generator=gen)
        return x, noise, text, mask

    @classmethod
    def from_cache(cls, dataset: Any, clips: int) -> ValidationSet:
        """The first ``clips`` clips of a :class:`univid.data.cache.CacheDataset`."""
        self = cls.__new__(cls)
        by_shape: dict[tuple, list] = {}
        for i in range(min(clips, len(dataset))):
            item = dataset[i]
            by_shape.setdefault(tuple(item.latents.shape), []).append(item)
        self.clips = sum(len(items) for items in by_shape.values())
        self.groups = []
        for items in by_shape.values():
            text, mask = pad_states([it.text for it in items], dataset.text_dim)
            self.groups.append(self._group(torch.stack([it.latents for it in items]), text, mask))
        return self

    @torch.no_grad()
    def loss(self, model: nn.Module, batch_size: int = 32) -> dict[str, float | list[float]]:
        """{'val_loss': mean over clips and t, 'per_t': one mean per value of t} for ``model``."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        per_t = []
        for k, t_value in enumerate(VAL_TIMES):
            total = 0.0
            for x_all, noise_all, text_all, mask_all in self.groups:
                for start in range(0, x_all.shape[0], batch_size):
                    part = slice(start, min(start + batch_size, x_all.shape[0]))
                    x, noise = x_all[part].to(device), noise_all[k, part].to(device)
                    text, mask = text_all[part].to(device), mask_all[part].to(device)
                    t = torch.full((x.shape[0],), t_value, device=device)
                    loss = flow_loss(
                        lambda xt, tt, c=text, m=mask: model(xt, tt, c, m), x, noise, t
                    )
                    total += loss.item() * x.shape[0]
            per_t.append(total / self.clips)
        model.train(was_training)
        return {"val_loss": sum(per_t) / len(per_t), "per_t": per_t}
