"""Tiny random text encoders saved to folders, loaded through the same path users take.

They borrow MiniLM's WordPiece tokenizer (it ships offline), so only the network is random."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def _copy_tokenizer(folder: Path) -> None:
    from univid.text import resolve_encoder_path

    minilm = resolve_encoder_path("minilm")
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, folder / name)


def save_tiny_t5(folder: Path, d_model: int = 32) -> Path:
    """A 2-layer random T5 (encoder + decoder saved, as T5 checkpoints are) in ``folder``."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=30522, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    folder.mkdir(parents=True, exist_ok=True)
    T5ForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)
    _copy_tokenizer(folder)
    return folder


def save_tiny_clip(folder: Path, hidden: int = 32) -> Path:
    """A 2-layer random CLIP text model in ``folder``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=30522,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        eos_token_id=102,
    )
    folder.mkdir(parents=True, exist_ok=True)
    CLIPTextModel(config).save_pretrained(folder, safe_serialization=True)
    _copy_tokenizer(folder)
    return folder
