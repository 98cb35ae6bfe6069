"""Text encoders (frozen) and their per-caption cache."""

from univid.text.encoder import TextEncoder, pad_states, resolve_encoder_path

__all__ = ["TextEncoder", "pad_states", "resolve_encoder_path"]
