"""Which names and which pieces of text hold secrets, and how they are masked.

Key names (argument names, dict keys, the first item of a pair). A key is split
into lower-case words at every character that is not a letter or a digit, at
digits and at camelCase humps: ``X-Api-Key`` is x api key, ``clientSecret`` is
client secret, ``DB_PASS2`` is db pass 2. Each entry of the secret-key list
(``ExporterSettings.secret_keys``) is split the same way. A key is secret when

1. the words of an entry appear in it one after the other, the last one maybe
   plural: ``api_key`` matches ``x_api_key`` and ``apiKeys``, ``pass`` matches
   ``db_pass`` but not ``passenger``, ``auth`` not ``author``, ``token`` not
   ``tokenizer``; or
2. an entry of five letters or more, written without separators, is inside one
   of its words: ``dbpassword``, ``xapikey``, ``csrftoken``, ``sessionid``; not
   when that word is one of the ordinary words of :data:`ORDINARY_WORDS` that
   merely contain an entry (``tokenizer``, ``secretary``, ``possession``);

unless it names a measure or a descriptor of a secret rather than the secret:
one of its words is in :data:`DESCRIPTOR_WORDS` (``max_tokens``,
``session_count``, ``token_type``, ``password_length``; a key that is exactly an
entry is secret all the same). Under a secret key ``True``, ``False`` and
``None`` are kept, they cannot be a secret (``use_auth=True``); any other value,
a whole dict or list included, is masked.

Text (string values, error messages, tracebacks): see :class:`TextRedactor`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from exporter.text import key_words

REDACTED = "***"
# Shorter values are not searched for in error texts: they would shred words.
MIN_SCRUB_LENGTH = 4
COMPOUND_MIN_LETTERS = 5

DESCRIPTOR_WORDS = frozenset(
    ("count", "counts", "num", "max", "min", "total", "limit", "length", "len", "size",
     "ttl", "timeout", "expiry", "expires", "expiration", "type", "kind", "method",
     "algorithm", "scheme", "version", "used", "prompt", "completion")
)  # fmt: skip
ORDINARY_WORDS = frozenset(
    ("tokenizer", "tokenizers", "tokenize", "tokenized", "tokenization", "secretary",
     "secretaries", "secretariat", "secrete", "secreted", "secretion", "possession",
     "possessions", "obsession", "obsessions", "cookiecutter")
)  # fmt: skip


class KeyRule:
    """The module docstring's rule for one list of entries, with a cache."""

    def __init__(self, entries: Iterable[str]) -> None:
        split = [words for words in map(key_words, entries) if words]
        self._entries = tuple(dict.fromkeys(split))
        self._exact = frozenset(self._entries)
        self._glued = tuple(
            g for g in dict.fromkeys("".join(w) for w in self._entries)
            if len(g) >= COMPOUND_MIN_LETTERS
        )  # fmt: skip
        self._cache: dict[str, bool] = {}
        self._mention_cache: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        known = self._cache.get(key)
        if known is None:
            known = self._decide(key_words(key))
            if len(self._cache) >= 10_000:  # keys are few; texts may be many
                self._cache.clear()
            self._cache[key] = known
        return known

    def mentions(self, text: str) -> bool:
        """Whether rule 1 or 2 matches somewhere in ``text``, the descriptor words
        aside: true of every text that ends with a secret key."""
        known = self._mention_cache.get(text)
        if known is None:
            known = self._matches(key_words(text))
            if len(self._mention_cache) >= 10_000:  # keys are few; texts may be many
                self._mention_cache.clear()
            self._mention_cache[text] = known
        return known

    def _decide(self, words: tuple[str, ...]) -> bool:
        if words in self._exact:
            return True
        return self._matches(words) and DESCRIPTOR_WORDS.isdisjoint(words)

    def _matches(self, words: tuple[str, ...]) -> bool:
        n = len(words)
        for entry in self._entries:
            k = len(entry)
            last = entry[-1]
            for i in range(n - k + 1):
                if words[i : i + k - 1] == entry[:-1] and words[i + k - 1] in (last, last + "s"):
                    return True
        for word in words:
            if len(word) >= COMPOUND_MIN_LETTERS and word not in ORDINARY_WORDS:
                for glued in self._glued:
                    if glued in word:
                        return True
        return False


_URL_USERINFO = re.compile(
    r"(?<![\w+.-])([A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@\"'<>]*):([^\s/?#\"'<>]+)@"
)
_BEARER = re.compile(r"\b(Bearer|BEARER)( +)([A-Za-z0-9\-._~+/]+=*)")
_BASIC = re.compile(r"\b(Basic|BASIC)( +)([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")
_PEM = re.compile(
    r"(-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----)(?:(.*?)(-----END \2PRIVATE KEY-----)"
    r"|([A-Za-z0-9+/=\s\\:,-]*))",
    re.DOTALL,
)
_VALUE = (
    r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'"
    r"|(?:(?:[Bb]earer|[Bb]asic|[Tt]oken|[Dd]igest) +)?[^\s,;&)}\]\"'<>]+"
)
# key=value, key = value, key: value (a space after the colon: "12:30" is no
# pair), "key": value, 'key':value.
_PAIR = re.compile(
    r"(?<![\w.-])(?:([\"'])([\w.-]+)\1( *=(?!=) *|: *)|([\w.-]+)( *=(?!=) *| *: +))"
    rf"({_VALUE})"
)
_MAX_KEY = 128


class TextRedactor:
    """Masks what looks like a credential inside free text, for one key rule:

    - a URL's password: ``scheme://user:***@host``;
    - ``Bearer <token>``, and ``Basic <base64 of user:password>`` (a capital B,
      as every client writes them);
    - a PEM private key: ``-----BEGIN ... PRIVATE KEY-----***-----END ...``;
    - ``key=value``, ``key: value`` (with a space), ``"key": "value"`` and
      ``'key': 'value'`` when the key is secret by the rule (of an unquoted
      value, its first word).

    Each masked piece (of :data:`MIN_SCRUB_LENGTH` characters or more) is added
    to ``found`` when one is given, so that the error text of the same attempt
    can be scrubbed of it.
    """

    def __init__(self, is_secret: KeyRule) -> None:
        self._is_secret = is_secret

    def suspect(self, text: str, *, json: bool = False) -> bool:
        """False when :meth:`redact` would surely change nothing. ``json``: ``text``
        is JSON (params as encoded), whose inner quotes are escaped.

        Substring searches only, a regular expression costs several times more.
        Single characters first (a fast memchr): each pattern needs ``=``, ``@``,
        a space (Bearer, Basic, PEM, ``key: value``) or a quote before a colon,
        and many params have none of them; a pair, a separator after a word
        that mentions a secret key."""
        quote = "\\" if json else '"'
        if " " in text:
            if "-----BEGIN" in text or (
                "B" in text
                and ("Bearer " in text or "Basic " in text or "BEARER " in text or "BASIC " in text)
            ):
                return True
            if ": " in text and self._pair_at(text, ": "):
                return True
        elif not ("=" in text or "@" in text or "'" in text or quote in text):
            return False
        return (
            ("@" in text and "://" in text and _URL_USERINFO.search(text) is not None)
            or ("=" in text and self._pair_at(text, "="))
            or (quote in text and self._pair_at(text, '\\":' if json else '":'))
            or ("'" in text and self._pair_at(text, "':"))
        )

    def _pair_at(self, text: str, separator: str) -> bool:
        """Whether what stands before one of the separators in ``text`` (up to a
        space) mentions a secret key: a superset of what the pairs' pattern finds."""
        mentions = self._is_secret.mentions
        at = text.find(separator)
        while at != -1:
            before = text[max(0, at - _MAX_KEY) : at].rstrip(" \"'\\")
            if "\\" in before:  # JSON's \n and \t would glue a letter to the key
                before = before.replace("\\n", " ").replace("\\t", " ").replace("\\r", " ")
            if mentions(before.rpartition(" ")[2]):
                return True
            at = text.find(separator, at + 1)
        return False

    def redact(self, text: str, found: list[str] | None = None) -> str:
        if "-----BEGIN" in text:
            text = _PEM.sub(lambda m: _pem(m, found), text)
        if "://" in text:
            text = _URL_USERINFO.sub(lambda m: _keep(m, 2, f"{m[1]}:{REDACTED}@", found), text)
        if "Bearer " in text or "BEARER " in text:
            text = _BEARER.sub(lambda m: _keep(m, 3, f"{m[1]}{m[2]}{REDACTED}", found), text)
        if "Basic " in text or "BASIC " in text:
            text = _BASIC.sub(lambda m: _basic(m, found), text)
        if "=" in text or ":" in text:
            text = _PAIR.sub(lambda m: self._pair_value(m, found), text)
        return text

    def _pair_value(self, m: re.Match[str], found: list[str] | None) -> str:
        quote, quoted_key, quoted_sep, key, sep, value = m.groups()
        if quoted_key is not None:
            key, sep = quoted_key, quoted_sep
        if REDACTED in value or not self._is_secret(key):
            return m.group(0)
        if value[:1] in ("'", '"'):
            _add(found, value[1:-1])
            masked = f"{value[0]}{REDACTED}{value[0]}"
        else:
            _add(found, value.split()[-1])
            masked = REDACTED
        quote = quote or ""
        return f"{quote}{key}{quote}{sep}{masked}"


def _add(found: list[str] | None, value: str) -> None:
    if found is not None and len(value) >= MIN_SCRUB_LENGTH and REDACTED not in value:
        found.append(value)


def _keep(m: re.Match[str], secret: int, masked: str, found: list[str] | None) -> str:
    _add(found, m.group(secret))
    return masked


def _basic(m: re.Match[str], found: list[str] | None) -> str:
    try:
        decoded = base64.b64decode(m.group(3), validate=True)
    except (binascii.Error, ValueError):
        return m.group(0)
    if b":" not in decoded:  # "Basic usage", not user:password
        return m.group(0)
    return _keep(m, 3, f"{m[1]}{m[2]}{REDACTED}", found)


def _pem(m: re.Match[str], found: list[str] | None) -> str:
    body = m.group(3) if m.group(4) is not None else m.group(5)
    for piece in re.split(r"\s+|\\n", body or ""):
        if len(piece) >= 16:
            _add(found, piece)
    return f"{m.group(1)}{REDACTED}{m.group(4) or ''}"


def scrub(text: str, values: Iterable[str]) -> str:
    """``text`` with every value (of :data:`MIN_SCRUB_LENGTH` characters or more)
    replaced by the marker: an exception that repeats an argument, say. The
    value's ``repr`` form (quotes and backslashes escaped) is searched for too."""
    forms: set[str] = set()
    for value in values:
        if len(value) >= MIN_SCRUB_LENGTH:
            forms.add(value)
            forms.add(repr(value)[1:-1])
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= MIN_SCRUB_LENGTH and form in text:
            text = text.replace(form, REDACTED)
    return text
