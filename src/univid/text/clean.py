"""The one gate for user text: every prompt and every caption goes through :func:`clean_text`.

What is harmless is normalised, so that text which *looks* the same *is* the same: Unicode NFC;
every kind of whitespace (tab, newline, carriage return, vertical tab, form feed, U+0085, the
line and paragraph separators U+2028/U+2029, no-break and ideographic spaces, ...) becomes one
space, with the ends stripped; invisible format characters (zero-width space, byte-order mark,
soft hyphen, bidi marks and embeddings, ...) are dropped, except the zero-width joiner and
non-joiner, which carry meaning (emoji sequences, Persian). What is not text is refused with one
line: nothing left after cleaning, more than :data:`MAX_TEXT_CHARS` characters, lone surrogates
(undecodable bytes on the command line) and control characters that are not whitespace (NUL,
ESC, DEL, ...). Torch-free.
"""

from __future__ import annotations

import unicodedata

from univid.errors import InputError

MAX_TEXT_CHARS = 2000  # the longest prompt or caption, in characters after cleaning
KEPT_FORMAT = frozenset("\u200c\u200d")  # zero-width non-joiner and joiner: they carry meaning


def clean_text(text: str, what: str = "prompt") -> str:
    """``text`` normalised as above, or :class:`InputError` saying why it is not usable text;
    ``what`` ('prompt', 'caption', ...) names it in the message. Idempotent."""
    if not isinstance(text, str):
        raise InputError(f"{what} is not text")
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            raise InputError(
                f"{what} is not valid UTF-8 text (undecodable byte(s) at character {i + 1})"
            )
    kept: list[str] = []
    space = False
    for ch in unicodedata.normalize("NFC", text):
        if ch.isspace():
            space = True
            continue
        category = unicodedata.category(ch)
        if category == "Cf" and ch not in KEPT_FORMAT:
            continue
        if category == "Cc":
            raise InputError(f"{what} contains control characters (U+{ord(ch):04X})")
        if space and kept:
            kept.append(" ")
        space = False
        kept.append(ch)
    # Dropping a format character may leave a base letter next to a combining mark: compose again.
    cleaned = unicodedata.normalize("NFC", "".join(kept))
    if not cleaned:
        raise InputError(f"{what} is empty")
    if len(cleaned) > MAX_TEXT_CHARS:
        raise InputError(f"{what} has {len(cleaned)} characters; at most {MAX_TEXT_CHARS}")
    return cleaned
