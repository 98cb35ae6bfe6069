"""The teacher's sampling paths that a few-step student learns from (``univid distill``).

Path ``i`` is a conditioning drawn from the teacher's own training mix (text to video, image to
video, extension or interpolation, from shapes-world clip ``i`` and its caption), a noise, and
the states of the teacher's guided Euler sampler from that noise at the ends of the student's
steps: t = 1 - k / max_steps, k = 1 .. max_steps (the last is the teacher's video). Everything
about path ``i`` depends only on (train.seed, i), so the paths are made in shards of
:data:`SHARD`, each written whole under a temporary name: a run stopped while making them goes
on from the first missing shard, and makes the same paths (bit for bit in one process; another
process may sum in another order and move a value by one fp16 step).

The shards sit in ``RUN/teacher_paths/`` as safetensors (states in fp16; the noise is drawn
again from its seed) with the captions in the file's metadata. Nothing in them is unpickled.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from univid.autoencoder import Autoencoder, load_autoencoder
from univid.config import Config
from univid.config.sections import EVAL_MODES, mix
from univid.data.shapes import ShapesWorld
from univid.device import autocast, autocast_dtype, precision_name
from univid.errors import InputError
from univid.files import CONFIG_LIMIT, atomic_write, read_json, writing
from univid.flow import euler_path, guided
from univid.given import to_given
from univid.text import TextEncoder

PATHS_DIR = "teacher_paths"
MANIFEST = "paths.json"
SHARD = 64  # paths per file (and per teacher batch)
PATH_STREAM = 31_415_926  # third word of a path's seed: its own stream, never a training clip's


@dataclass
class TeacherPath:
    """One path of the teacher: ``states`` (1 + max_steps, C, T, H, W) fp32, entry k at
    t = 1 - k / max_steps (entry 0 is the noise with the given frames in place), ``given``
    (T',) bool, and its caption."""

    states: torch.Tensor
    given: torch.Tensor
    caption: str


def path_noise(seed: int, index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The noise of path ``index`` (fp32), from its own seed."""
    word = int(np.random.SeedSequence([seed, index, PATH_STREAM]).generate_state(1)[0])
    return torch.randn(shape, generator=torch.Generator().manual_seed(word))


def path_conditioning(
    cfg: Config, world: ShapesWorld, index: int, time_frames: int
) -> tuple[str, str, dict[int, np.ndarray]]:
    """(mode, caption, given frames: index -> uint8 (H, W, 3)) of path ``index``: the mode from
    the teacher's mix over the modes a user can ask for, and the frames of world clip ``index``
    that the mode gives (i2v: the first, extend: the first k latent frames, k uniform in
    2 .. T' - 1, interpolate: the first and last), as in training."""
    weights = mix(cfg)
    modes = [m for m in EVAL_MODES if weights[m] > 0]
    p = np.array([weights[m] for m in modes])
    rng = np.random.default_rng([cfg.train.seed, index, PATH_STREAM])
    mode = modes[rng.choice(len(modes), p=p / p.sum())]
    video, caption, _ = world[index]
    group = len(video) // time_frames  # video frames per latent frame
    latent: list[int] = []
    if mode == "i2v":
        latent = [0]
    elif mode == "extend":
        latent = list(range(int(rng.integers(2, time_frames))))
    elif mode == "interpolate":
        latent = [0, time_frames - 1]
    frames = [f for g in latent for f in range(g * group, (g + 1) * group)]
    return mode, caption, {f: video[f] for f in frames}


class PathMaker:
    """Makes the teacher's paths of a distillation run (see the module's docstring)."""

    def __init__(self, cfg: Config, teacher: nn.Module, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.teacher = teacher.to(device).eval()
        d = cfg.data
        self.autoencoder: Autoencoder = load_autoencoder(d.autoencoder, device)
        self.latent = self.autoencoder.latent_shape(d.frames, d.height, d.width)
        self.time_frames = self.latent[0] // cfg.model.patch[0]
        self.world = ShapesWorld(d.frames, d.height, d.width, seed=cfg.train.seed)
        t = cfg.text
        self.text = TextEncoder(t.encoder, t.max_length, device, padding=t.padding)
        self.amp = autocast_dtype(cfg.train.precision, device)

    @torch.no_grad()
    def shard(self, indices: range) -> dict[str, Any]:
        """The states, given masks, captions and modes of the paths ``indices``."""
        cfg = self.cfg
        modes, captions, frames = zip(
            *(path_conditioning(cfg, self.world, i, self.time_frames) for i in indices)
        )
        shape = (cfg.model.in_channels, *self.latent)
        noise = torch.stack([path_noise(cfg.train.seed, i, shape) for i in indices])
        noise = noise.to(self.device)
        given = to_given(
            list(frames), self.autoencoder, cfg.data.frames, self.time_frames, self.device
        )
        text, mask = self.text.encode(list(captions))
        null, null_mask = self.text.encode([""] * len(indices))
        d = cfg.distill
        velocity = guided(self.teacher, text, mask, null, null_mask, d.guidance)
        with autocast(self.device, self.amp):
            states = euler_path(velocity, noise, d.teacher_steps, d.max_steps, given)
        if given is None:
            mask_frames = torch.zeros(len(indices), self.time_frames, dtype=torch.bool)
        else:
            mask_frames = given.mask.cpu()
        return {
            "states": states.transpose(0, 1).half().cpu().contiguous(),  # (n, K, C, T, H, W)
            "given": mask_frames.to(torch.uint8),
            "captions": list(captions),
            "modes": list(modes),
        }


def shard_path(folder: Path, shard: int) -> Path:
    return folder / f"paths_{shard:05d}.safetensors"


def shards(cfg: Config) -> range:
    """The paths files of ``cfg``'s run, by number."""
    return range((cfg.distill.paths + SHARD - 1) // SHARD)


def missing_shards(cfg: Config, folder: Path) -> list[int]:
    """The paths files of ``cfg``'s run not yet in ``folder``."""
    return [s for s in shards(cfg) if not shard_path(folder, s).is_file()]


def paths_complete(cfg: Config, run_dir: Path) -> bool:
    """Whether every teacher path of the run in ``run_dir`` is made."""
    return not missing_shards(cfg, paths_folder(cfg, run_dir))


def make_paths(
    cfg: Config, teacher: nn.Module, folder: Path, device: torch.device, progress: bool = True
) -> Path:
    """Make the run's missing teacher paths in ``folder`` (shards already there are kept)."""
    count = cfg.distill.paths
    missing = missing_shards(cfg, folder)
    if not missing:
        return folder
    maker = PathMaker(cfg, teacher, device)
    start = time.perf_counter()
    bar = tqdm(
        total=count,
        initial=count - sum(len(_indices(s, count)) for s in missing),
        desc="teacher paths",
        unit="path",
        disable=not progress,
    )
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        for s in missing:
            part = maker.shard(_indices(s, count))
            meta = {"captions": json.dumps(part["captions"]), "modes": json.dumps(part["modes"])}
            tensors = {"states": part["states"], "given": part["given"]}
            atomic_write(shard_path(folder, s), lambda tmp, t=tensors, m=meta: save_file(t, tmp, m))
            bar.update(len(part["captions"]))
        bar.close()
        manifest = {
            **path_settings(cfg),
            "teacher": cfg.lora.base,
            "made_in": precision_name(maker.amp),
            "device": device.type,
            "seconds_this_session": round(time.perf_counter() - start, 1),
        }
        text = json.dumps(manifest, indent=1)
        atomic_write(folder / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if progress:
        print(f"univid: teacher paths in {folder}", file=sys.stderr)
    return folder


def path_settings(cfg: Config) -> dict[str, Any]:
    """What decides a run's teacher paths: two runs that agree on these have the same paths."""
    d = cfg.distill
    return {
        "teacher_sha256": cfg.lora.base_sha256,
        "seed": cfg.train.seed,
        "paths": d.paths,
        "guidance": d.guidance,
        "teacher_steps": d.teacher_steps,
        "max_steps": d.max_steps,
        "precision": cfg.train.precision,
        "data": [cfg.data.frames, cfg.data.height, cfg.data.width, cfg.data.autoencoder],
    }


def paths_folder(cfg: Config, run_dir: Path) -> Path:
    """Where a run's teacher paths are: ``distill.paths_from``, or ``RUN/teacher_paths``."""
    return Path(cfg.distill.paths_from) if cfg.distill.paths_from else run_dir / PATHS_DIR


def _indices(shard: int, count: int) -> range:
    return range(shard * SHARD, min(count, (shard + 1) * SHARD))


class TeacherPaths:
    """The paths of a run folder as a dataset: ``paths[i]`` is a :class:`TeacherPath`. All
    shards are read into memory at once (fp16)."""

    def __init__(self, cfg: Config, folder: Path) -> None:
        missing = missing_shards(cfg, folder)
        if missing:
            raise InputError(
                f"the teacher's paths in {folder} are incomplete ({len(missing)} of "
                f"{len(shards(cfg))} files missing); make them with: univid distill "
                f"{cfg.lora.base} --out {folder.parent}"
            )
        made = read_json(folder / MANIFEST, CONFIG_LIMIT)
        wanted = path_settings(cfg)
        differ = [k for k, v in wanted.items() if json.loads(json.dumps(v)) != made.get(k)]
        if differ:
            raise InputError(
                f"the teacher's paths in {folder} were made with other settings ({differ[0]}: "
                f"{made.get(differ[0])!r}, this run: {wanted[differ[0]]!r})"
            )
        states, given, captions = [], [], []
        for s in shards(cfg):
            with safe_open(shard_path(folder, s), framework="pt") as f:
                states.append(f.get_tensor("states"))
                given.append(f.get_tensor("given").bool())
                captions += json.loads(f.metadata()["captions"])
        self.states, self.given, self.captions = torch.cat(states), torch.cat(given), captions
        self.seed = cfg.train.seed

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> TeacherPath:
        states = self.states[index].float()  # (K, C, T, H, W)
        given = self.given[index]
        noise = path_noise(self.seed, index, tuple(states.shape[1:]))
        frames = given.repeat_interleave(states.shape[2] // given.shape[0])
        start = torch.where(frames[None, :, None, None], states[-1], noise)
        return TeacherPath(torch.cat([start[None], states]), given, self.captions[index])
