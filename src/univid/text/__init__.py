"""Text encoders (frozen) and their per-caption cache; :mod:`univid.text.clean`, the gate every
prompt and caption goes through (torch-free: importing it does not load the encoders)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from univid.text.encoder import TextEncoder, pad_states, resolve_encoder_path

__all__ = ["TextEncoder", "pad_states", "resolve_encoder_path"]


def __getattr__(name: str) -> Any:
    # The encoders import torch; the data listing only needs univid.text.clean.
    if name in __all__:
        from univid.text import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module 'univid.text' has no attribute {name!r}")
