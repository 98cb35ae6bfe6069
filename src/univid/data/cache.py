"""``univid prepare``: encode every clip once into a cache of sharded safetensors + an index.

Training on real videos spends most of its time decoding and running the autoencoder and the
text encoder unless they run once, ahead of time. A cache folder holds

- ``settings.json``: how it was made (and the source listing's fingerprint); a rerun with other
  settings is refused instead of mixing two caches;
- ``shard_NNNNN.safetensors``: for clip i of the shard, ``i.latents`` (C, T', H', W') and
  ``i.text`` (L, D) (the caption's real tokens; padding is added when batches are built), and
  ``shard_NNNNN.json`` (captions, buckets, shapes, the bad clips and why), written last: a shard
  with its JSON is finished, so a rerun skips it (``prepare`` is resumable);
- ``null.safetensors``: the empty caption's text states (the unconditional input);
- ``index.json``: everything above in one file, read by training (``data.cache=FOLDER``);
- ``bad.log``: every clip that could not be used, with its reason.

Nothing is silently dropped: bad clips are counted, listed and summarised, and ``prepare`` stops
when more than ``max_bad_fraction`` of the clips are bad.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from univid.data import BadSample
from univid.data.buckets import Bucket, available_frames, bucket_name, choose_bucket
from univid.data.decode import ClipSpec, probe, read_clip
from univid.data.sources import SourceItem, list_sources
from univid.data.windows import clip_of, decode_frames, plan_windows, shot_spans
from univid.device import DTYPES
from univid.errors import InputError
from univid.files import atomic_write, file_problem, read_json

FORMAT = 1


@dataclass(frozen=True)
class PrepareSettings:
    """How clips are read and encoded; stored in the cache and checked when it is resumed."""

    autoencoder: str = "pixel"
    text_encoder: str = "minilm"
    max_length: int = 32
    padding: str = "longest"
    buckets: tuple[Bucket, ...] = ((8, 32, 32),)
    fps: float = 8.0
    stride: int = 0
    window_stride: int = 0  # > 0: a window every N output frames of each shot; 0: one per video
    resize: str = "crop"
    max_source_pixels: int = 8192 * 8192
    dtype: str = "float32"
    shard_size: int = 64
    encode_batch: int = 4
    max_bad_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InputError(f"dtype {self.dtype!r} must be one of {', '.join(DTYPES)}")
        for name in ("shard_size", "encode_batch", "max_length"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.fps <= 0 and not self.stride:
            raise InputError(f"fps must be > 0 (or give a stride), got {self.fps}")
        if self.window_stride < 0:
            raise InputError(f"window_stride must be >= 0, got {self.window_stride}")
        if not 0 <= self.max_bad_fraction <= 1:
            raise InputError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")

    def spec(self, bucket: Bucket) -> ClipSpec:
        return ClipSpec(
            frames=bucket[0],
            height=bucket[1],
            width=bucket[2],
            fps=self.fps,
            stride=self.stride,
            resize=self.resize,
            max_pixels=self.max_source_pixels,
        )

    def recorded(self) -> dict[str, Any]:
        """The settings that decide the cache's content (not how fast it is made)."""
        values = asdict(self)
        for name in ("encode_batch", "max_bad_fraction"):
            values.pop(name)
        if not self.window_stride:  # one clip per video, as caches made before windows existed
            values.pop("window_stride")
        values["buckets"] = [list(b) for b in self.buckets]
        return values


@dataclass
class ItemClips:
    """The clips of one source item: one, or one per window of a video cut into windows."""

    bucket: Bucket
    keys: list[str]  # clip keys: the item's key, or "KEY#w" for window w
    fields: list[dict[str, Any]]  # extra index fields of each clip (window, source frames)
    arrays: Callable[[int], np.ndarray]  # clip i as uint8 (T, H, W, 3)
    video: dict[str, Any] | None = None  # key, frames, cuts, windows of a windowed video


def read_clips(item: SourceItem, settings: PrepareSettings) -> ItemClips:
    """The bucket and clips of one source item; :class:`BadSample` if unusable.

    With ``settings.window_stride`` 0 (and for images) the item gives one clip, its first
    window. Otherwise the video is decoded once, its shot cuts found, and every shot cut into
    windows of the bucket's frames, one every ``window_stride`` output frames
    (:mod:`univid.data.windows`)."""
    if item.problem:
        raise BadSample(item.problem)
    assert item.path is not None
    path = item.path
    info = probe(path, settings.max_source_pixels)
    usable = available_frames(info.duration, info.frames, settings.fps, settings.stride)
    bucket = choose_bucket(info.kind, info.width, info.height, usable, settings.buckets)
    spec = settings.spec(bucket)
    if not settings.window_stride or info.kind == "image":
        return ItemClips(bucket, [item.key], [{}], lambda _: read_clip(path, spec))
    video = decode_frames(path, spec)
    windows = plan_windows(video.source, video.cuts, bucket[0], settings.window_stride)
    if not windows:
        longest = max(end - first for first, end in shot_spans(video.source, video.cuts))
        raise BadSample(
            f"no window: every shot is shorter than the clip (longest {longest} frames at the "
            f"clip rate, the {bucket_name(bucket)} bucket needs {bucket[0]}; "
            f"{len(video.cuts)} cut(s))"
        )
    fields = [
        {
            "video": item.key,
            "window": w.index,
            "source_frames": [video.source[w.start], video.source[w.start + w.length - 1]],
        }
        for w in windows
    ]
    summary = {
        "key": item.key,
        "frames": video.decoded,
        "cuts": video.cuts,
        "windows": len(windows),
    }
    return ItemClips(
        bucket,
        [f"{item.key}#{w.index}" for w in windows],
        fields,
        lambda i: clip_of(video, windows[i]),
        summary,
    )


def check(
    src: str | Path, settings: PrepareSettings, progress: bool = True
) -> tuple[int, dict[Bucket, int], list[tuple[str, str]], list[dict[str, Any]]]:
    """Read every clip of ``src`` once, encode nothing: (items, clips per bucket, bad items,
    the windowed videos' summaries: key, frames, cuts, windows)."""
    items = list_sources(src)
    counts: dict[Bucket, int] = defaultdict(int)
    bad = []
    videos = []
    for item in tqdm(items, desc="check", unit="clip", disable=not progress):
        try:
            clips = read_clips(item, settings)
            if clips.video is None:
                clips.arrays(0)
            else:
                videos.append(clips.video)
            counts[clips.bucket] += len(clips.keys)
        except BadSample as exc:
            bad.append((item.key, str(exc)))
    return len(items), dict(counts), bad, videos


def _fingerprint(items: list[SourceItem]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.key}\0{item.caption}\0{item.problem}\n".encode("utf-8", "replace"))
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _write_json(path: Path, value: Any) -> None:
    _atomic_write(path, json.dumps(value, indent=1).encode("utf-8"))


@dataclass
class PrepareReport:
    """What ``prepare`` did: clips cached per bucket, bad clips, shards made and reused."""

    cache: Path
    clips: int = 0
    buckets: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[str, str]] = field(default_factory=list)
    shards_written: int = 0
    shards_reused: int = 0
    seconds: float = 0.0
    videos: list[dict[str, Any]] = field(
        default_factory=list
    )  # windowed: key, frames, cuts, windows


def prepare(
    src: str | Path,
    out: str | Path,
    settings: PrepareSettings,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> PrepareReport:
    """Encode every clip of ``src`` (folder, CSV or JSONL) into the cache folder ``out``."""
    import time

    from safetensors.torch import save

    from univid.autoencoder import load_autoencoder
    from univid.text import TextEncoder

    start = time.perf_counter()
    out = Path(out)
    items = list_sources(src)
    if not items:
        raise InputError(f"{src} has no videos, images or table rows")
    _claim_folder(
        out, {**settings.recorded(), "items": len(items), "fingerprint": _fingerprint(items)}
    )
    autoencoder = load_autoencoder(settings.autoencoder, device=device)
    for bucket in settings.buckets:
        autoencoder.check_shape(*bucket)
    text = TextEncoder(
        settings.text_encoder, settings.max_length, device=device, padding=settings.padding
    )
    dtype = DTYPES[settings.dtype]
    null_states, null_mask = text.encode([""])
    null = null_states[0, : int(null_mask[0].sum())]
    _atomic_write(out / "null.safetensors", save({"text": null.to(dtype).cpu().contiguous()}))

    report = PrepareReport(cache=out)
    entries = _encode_all(items, out, settings, autoencoder, text, report, progress)
    counts: dict[str, int] = defaultdict(int)
    latent_of: dict[str, list[int]] = {}
    for entry in entries:
        counts[entry["bucket_name"]] += 1
        latent_of[entry["bucket_name"]] = entry["latent"]
    index = {
        "format": FORMAT,
        "settings": settings.recorded(),
        "autoencoder": autoencoder.describe(),
        "text_encoder": text.describe(),
        "channels": autoencoder.channels,
        "text_dim": text.dim,
        "dtype": settings.dtype,
        "buckets": {b: {"clips": counts[b], "latent": latent_of[b]} for b in sorted(counts)},
        "clips": entries,
        "bad": [{"key": k, "reason": r} for k, r in report.bad],
    }
    if settings.window_stride:
        index["videos"] = report.videos
    _write_json(out / "index.json", index)
    report.clips, report.buckets = len(entries), dict(counts)
    report.seconds = time.perf_counter() - start
    return report


def _claim_folder(out: Path, recorded: dict[str, Any]) -> None:
    """Record how the cache in ``out`` is made, or check a rerun makes it the same way."""
    out.mkdir(parents=True, exist_ok=True)
    settings_path = out / "settings.json"
    if not settings_path.is_file():
        _write_json(settings_path, recorded)
        return
    before = read_json(settings_path)
    changed = [k for k in recorded if before.get(k) != recorded[k]]
    if changed:
        raise InputError(
            f"{out} holds a cache made with other settings or sources (differs in "
            f"{', '.join(changed)}); use a new --out, or the same options to resume it"
        )


def _encode_all(
    items: list[SourceItem],
    out: Path,
    settings: PrepareSettings,
    autoencoder: Any,
    text: Any,
    report: PrepareReport,
    progress: bool,
) -> list[dict[str, Any]]:
    """Encode (or reuse) every shard; returns the index entries of the usable clips."""
    dtype = DTYPES[settings.dtype]
    shards = [items[i : i + settings.shard_size] for i in range(0, len(items), settings.shard_size)]
    allowed_bad = settings.max_bad_fraction * len(items)
    entries: list[dict[str, Any]] = []
    with tqdm(total=len(items), desc="prepare", unit="clip", disable=not progress) as bar:
        for number, shard in enumerate(shards):
            name = f"shard_{number:05d}"
            meta_path = out / f"{name}.json"
            if meta_path.is_file():
                meta = read_json(meta_path)
                report.shards_reused += 1
            else:
                meta = _encode_shard(shard, settings, autoencoder, text, dtype, out / name)
                _write_json(meta_path, meta)
                report.shards_written += 1
            entries += [{**clip, "shard": f"{name}.safetensors"} for clip in meta["clips"]]
            report.bad += [(b["key"], b["reason"]) for b in meta["bad"]]
            report.videos += meta.get("videos", [])
            bar.update(len(shard))
            bar.set_postfix(bad=len(report.bad))
            if len(report.bad) > allowed_bad:
                _write_bad_log(out, report.bad)
                raise InputError(
                    f"{len(report.bad)} of {len(items)} clips are bad, more than "
                    f"max_bad_fraction={settings.max_bad_fraction}; reasons in "
                    f"{out / 'bad.log'} (finished shards are kept: rerun the same command to "
                    "resume)"
                )
    _write_bad_log(out, report.bad)
    return entries


def _write_bad_log(out: Path, bad: list[tuple[str, str]]) -> None:
    text = "".join(f"{key}: {reason}\n" for key, reason in bad)
    _atomic_write(out / "bad.log", text.encode("utf-8"))


@torch.no_grad()
def _encode_shard(
    shard: list[SourceItem],
    settings: PrepareSettings,
    autoencoder: Any,
    text: Any,
    dtype: torch.dtype,
    stem: Path,
) -> dict[str, Any]:
    """Decode, encode and write one shard; returns its JSON metadata."""
    from safetensors.torch import save

    pending: dict[Bucket, list[tuple[tuple[int, int], dict[str, Any], np.ndarray]]]
    pending = defaultdict(list)
    tensors: dict[str, torch.Tensor] = {}
    clips: list[dict[str, Any]] = []
    order: dict[str, tuple[int, int]] = {}
    device = getattr(text, "device", "cpu")

    def flush(bucket: Bucket) -> None:
        group, pending[bucket] = pending[bucket], []
        video = torch.from_numpy(np.stack([v for _, _, v in group])).to(device)
        video = video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (B, 3, T, H, W)
        latents = autoencoder.encode(video).float().cpu()
        states, mask = text.encode([entry["caption"] for _, entry, _ in group])
        for (place, entry, _), z, s, m in zip(group, latents, states, mask):
            tensors[f"{entry['name']}.latents"] = z.to(dtype).contiguous()
            tensors[f"{entry['name']}.text"] = s[: int(m.sum())].to(dtype).cpu().contiguous()
            clips.append({**entry, "latent": list(z.shape)})
            order[entry["name"]] = place

    bad = []
    videos = []
    for i, item in enumerate(shard):
        try:
            found = read_clips(item, settings)
            first = found.arrays(0)  # a single clip is read (and may fail) here
        except BadSample as exc:
            bad.append({"key": item.key, "reason": str(exc) or "unusable"})
            continue
        if found.video is not None:
            videos.append(found.video)
        bucket = found.bucket
        for w in range(len(found.keys)):
            array = first if w == 0 else found.arrays(w)
            entry = {
                "key": found.keys[w],
                "name": str(i) if found.video is None else f"{i}.{w}",
                "caption": item.caption,
                "bucket": list(bucket),
                "bucket_name": bucket_name(bucket),
                **found.fields[w],
                "extra": item.extra,
            }
            pending[bucket].append(((i, w), entry, array))
            if len(pending[bucket]) >= settings.encode_batch:
                flush(bucket)
    for bucket in sorted(pending):
        if pending[bucket]:
            flush(bucket)
    clips.sort(key=lambda c: order[c["name"]])
    if tensors:
        _atomic_write(stem.with_suffix(".safetensors"), save(tensors))
    meta: dict[str, Any] = {"clips": clips, "bad": bad}
    if settings.window_stride:
        meta["videos"] = videos
    return meta


@dataclass
class CachedClip:
    """One cached training clip: normalised latents, caption states, caption."""

    latents: torch.Tensor  # (C, T', H', W') float32
    text: torch.Tensor  # (L, D) float32, real tokens only
    caption: str


class CacheDataset:
    """A prepared cache as a training dataset: ``ds[i]`` -> :class:`CachedClip`.

    ``buckets`` maps each (frames, height, width) bucket to its clip indices. A shard that
    cannot be read makes its clips raise :class:`BadSample` (the trainer skips and counts them).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / "index.json").is_file():
            raise InputError(
                f"{self.folder} is not a prepared cache (no index.json); make one with "
                "`univid prepare SRC --out FOLDER`"
            )
        index = read_json(self.folder / "index.json")
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise InputError(f"{self.folder / 'index.json'} is not a univid cache index")
        self.index = index
        self.clips: list[dict[str, Any]] = index["clips"]
        if not self.clips:
            raise InputError(f"the cache {self.folder} has no usable clips")
        self.channels: int = int(index["channels"])
        self.text_dim: int = int(index["text_dim"])
        self.buckets: dict[Bucket, list[int]] = defaultdict(list)
        for i, clip in enumerate(self.clips):
            self.buckets[tuple(clip["bucket"])].append(i)
        self.buckets = dict(self.buckets)
        self.latent_shapes = {tuple(c["bucket"]): tuple(c["latent"]) for c in self.clips}
        self._shards: dict[str, Any] = {}
        from univid.build import read_safetensors

        null = read_safetensors(self.folder / "null.safetensors")
        self.null_text = null["text"].float()

    def __len__(self) -> int:
        return len(self.clips)

    def _shard(self, name: str) -> Any:
        if name not in self._shards:
            from safetensors import safe_open

            problem = file_problem(self.folder / name, 1 << 62)  # never open a FIFO
            if problem is not None:
                raise BadSample(f"cannot read cache shard {name}: {problem}")
            try:
                self._shards[name] = safe_open(self.folder / name, framework="pt")
            except Exception as exc:  # safetensors raises several types for damaged files
                raise BadSample(f"cannot read cache shard {name}: {exc}") from None
        return self._shards[name]

    def __getitem__(self, index: int) -> CachedClip:
        clip = self.clips[index]
        shard = self._shard(clip["shard"])
        try:
            latents = shard.get_tensor(f"{clip['name']}.latents").float()
            text = shard.get_tensor(f"{clip['name']}.text").float()
        except Exception as exc:
            raise BadSample(
                f"cannot read clip {clip['key']!r} from {clip['shard']}: {exc}"
            ) from None
        return CachedClip(latents, text, clip["caption"])

    def placeholder(self, index: int) -> CachedClip:
        """Zeros of clip ``index``'s shapes: what a bad clip's place in a batch holds."""
        shape = tuple(self.clips[index]["latent"])
        return CachedClip(torch.zeros(shape), torch.zeros(1, self.text_dim), "")

    def text_encoder(self, indices: list[int], device: torch.device) -> CachedTextEncoder:
        """A stand-in text encoder that knows the captions of clips ``indices`` and ''; each
        caption under its cleaned form, the prompt a pipeline passes on (``indices`` must be
        clips whose captions :func:`~univid.text.clean.clean_text` accepts)."""
        from univid.text.clean import clean_text

        states = {clean_text(self.clips[i]["caption"], "caption"): self[i].text for i in indices}
        states[""] = self.null_text
        return CachedTextEncoder(states, self.text_dim, device)

    def summary(self) -> str:
        parts = [f"{name}: {b['clips']}" for name, b in self.index["buckets"].items()]
        return f"{len(self)} clips in {len(parts)} bucket(s) ({', '.join(parts)})"


class CachedTextEncoder:
    """``encode(captions)`` like :class:`univid.text.TextEncoder`, from states read off a cache,
    so a run on a cache samples its own captions without loading the text encoder."""

    def __init__(self, states: dict[str, torch.Tensor], dim: int, device: torch.device) -> None:
        self.states, self.dim, self.device = states, dim, device

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from univid.text import pad_states

        missing = [c for c in captions if c not in self.states]
        if missing:
            raise InputError(f"caption {missing[0]!r} is not in the cache")
        states, mask = pad_states([self.states[c] for c in captions], self.dim)
        return states.to(self.device), mask.to(self.device)


def describe_videos(videos: list[dict[str, Any]], limit: int = 12) -> list[str]:
    """One line per windowed video (``key: W windows, F frames, C cuts at ...``), the first
    ``limit`` of them, then a line with the total."""
    lines = []
    for v in videos[:limit]:
        cuts = f" at {', '.join(map(str, v['cuts']))}" if v["cuts"] else ""
        lines.append(
            f"{v['key']}: {v['windows']} window(s), {v['frames']} frames, {len(v['cuts'])} "
            f"cut(s){cuts}"
        )
    if len(videos) > limit:
        lines.append(f"... and {len(videos) - limit} more video(s)")
    if videos:
        windows = sum(v["windows"] for v in videos)
        lines.append(f"{windows} windows from {len(videos)} video(s)")
    return lines


def print_report(report: PrepareReport) -> None:
    """The end-of-run summary of ``prepare`` on stderr."""
    buckets = ", ".join(f"{b}: {n}" for b, n in sorted(report.buckets.items()))
    print(
        f"univid: cached {report.clips} clips in {report.cache} ({buckets}) in "
        f"{report.seconds:.1f} s; {report.shards_written} shard(s) written, "
        f"{report.shards_reused} reused",
        file=sys.stderr,
    )
    for line in describe_videos(report.videos):
        print(f"univid:   {line}", file=sys.stderr)
    if report.bad:
        print(
            f"univid: skipped {len(report.bad)} bad clip(s); reasons in {report.cache / 'bad.log'}",
            file=sys.stderr,
        )
