"""Text helpers every layer needs: what PostgreSQL text may hold, and how a key
name splits into words (``"X-Api-Key"`` -> ``x api key``), which both the
redaction rules and the settings that list secret keys go by."""

from __future__ import annotations

import re

# A letter that is not an ASCII capital: ASCII lower case, or any other alphabet's.
_LOWER = r"(?:[a-z]|(?![A-Z])[^\W\d_])"
_WORDS = re.compile(rf"[A-Z]+(?!{_LOWER})|[A-Z]?{_LOWER}+|[0-9]+")


def clean_text(value: str) -> str:
    """PostgreSQL text holds neither NUL nor lone surrogates (non-UTF-8 input)."""
    if not value.isascii():
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    return value


def key_words(key: str) -> tuple[str, ...]:
    """``"X-Api-Key"`` -> ``("x", "api", "key")``."""
    return tuple(w.lower() for w in _WORDS.findall(key))
