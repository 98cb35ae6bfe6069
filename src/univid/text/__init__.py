"""Text encoders (frozen) and their per-caption cache."""

from univid.text.encoder import TextEncoder, resolve_encoder_path

__all__ = ["TextEncoder", "resolve_encoder_path"]
