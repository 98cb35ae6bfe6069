"""The network and only the network: forward(x, t, text, text_mask) -> velocity."""

from univid.model.dit import DiTStream
from univid.model.embed import patchify, unpatchify
from univid.model.encoder import EncoderStream

__all__ = ["DiTStream", "EncoderStream", "patchify", "unpatchify"]
