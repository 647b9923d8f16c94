"""Make anything a task was given or raised safe to store: secrets redacted,
JSON that PostgreSQL accepts, text capped with a visible marker."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from exporter.middleware.tracebacks import format_traceback

REDACTED = "***"
MAX_DEPTH = 32
TRUNCATION_MARKER = "... [truncated {n} bytes]"
_INT64 = 2**63
EMPTY_PARAMS = '{"args":[],"kwargs":{}}'


def clean_text(value: str) -> str:
    """PostgreSQL text holds neither NUL nor lone surrogates (non-UTF-8 input)."""
    if not value.isascii():
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    return value


def cap_text(value: str, max_bytes: int, *, keep_tail: bool = False) -> str:
    """Cut ``value`` to about ``max_bytes`` UTF-8 bytes and say how much was cut.
    ``keep_tail`` keeps the end (a traceback's last lines say what went wrong)."""
    raw = value.encode("utf-8")
    if len(raw) <= max_bytes:
        return value
    cut = len(raw) - max_bytes
    marker = TRUNCATION_MARKER.format(n=cut)
    if keep_tail:
        head = raw[: max_bytes // 4].decode("utf-8", "ignore")
        tail = raw[len(raw) - (max_bytes - max_bytes // 4) :].decode("utf-8", "ignore")
        return f"{head}\n{marker}\n{tail}"
    return raw[:max_bytes].decode("utf-8", "ignore") + marker


def safe_repr(value: object) -> str:
    try:
        return clean_text(repr(value))
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def safe_str(value: object) -> str:
    try:
        return clean_text(str(value))
    except Exception:
        return f"<str() failed for {type(value).__name__}>"


def _plain(value: str | int | float) -> str | int | float:
    """A subclass's value as the plain type (orjson takes no float or str-key subclass)."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    return float.__float__(value)


class ParamsEncoder:
    """Turns a task's args and kwargs into the JSON text stored in ``params``."""

    def __init__(self, *, secret_keys: tuple[str, ...], max_bytes: int) -> None:
        self._secret_keys = tuple(k.replace("-", "_") for k in secret_keys)
        self._max_bytes = max_bytes
        self._secret_cache: dict[str, bool] = {}

    def is_secret(self, key: str) -> bool:
        known = self._secret_cache.get(key)
        if known is None:
            norm = key.lower().replace("-", "_")
            known = any(s in norm for s in self._secret_keys)
            if len(self._secret_cache) < 10_000:
                self._secret_cache[key] = known
        return known

    def _walk(self, value: Any, depth: int) -> Any:
        # Exact types first: the common values skip isinstance() and the
        # Mapping ABC check (a task's params are walked on every send).
        cls = value.__class__
        if cls is str:
            return clean_text(value)
        if cls is int:
            return value if -_INT64 <= value < _INT64 else str(value)
        if value is None or cls is bool:
            return value
        if cls is float:
            return value if math.isfinite(value) else repr(value)
        if depth >= MAX_DEPTH:
            return "<max depth>"
        if cls is dict:
            return self._walk_map(value, depth)
        if cls is list or cls is tuple:
            return [self._walk(item, depth + 1) for item in value]
        # Subclasses (str and int enums, say) as their plain values, then the rest.
        if isinstance(value, str | int | float):
            return self._walk(_plain(value), depth)
        if isinstance(value, Mapping):
            return self._walk_map(value, depth)
        if isinstance(value, list | tuple | set | frozenset):
            return [self._walk(item, depth + 1) for item in value]
        return safe_repr(value)

    def _walk_map(self, value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        is_secret = self.is_secret
        for key, item in value.items():
            if key.__class__ is not str:
                key = _plain(key) if isinstance(key, str) else safe_repr(key)
            name = clean_text(key)
            out[name] = REDACTED if is_secret(name) else self._walk(item, depth + 1)
        return out

    def encode(self, args: Any, kwargs: Any) -> str:
        if not args and not kwargs:
            return EMPTY_PARAMS
        doc = {"args": self._walk(list(args or ()), 1), "kwargs": self._walk_map(kwargs or {}, 1)}
        text = orjson.dumps(doc).decode()
        if len(text) > self._max_bytes // 4 and len(text.encode("utf-8")) > self._max_bytes:
            preview = cap_text(text, self._max_bytes // 2)
            size = len(text.encode("utf-8"))
            text = orjson.dumps(
                {"_truncated": True, "original_bytes": size, "preview": preview}
            ).decode()
        return text


def describe_exception(
    exc: BaseException, *, max_message_bytes: int, max_traceback_bytes: int
) -> tuple[str, str]:
    """``("TypeName: message", full traceback)``, each capped; never raises."""
    name = type(exc).__name__
    text = safe_str(exc)
    message = cap_text(f"{name}: {text}" if text else name, max_message_bytes)
    try:
        tb = format_traceback(exc)
    except Exception:
        tb = f"{name}: <traceback could not be formatted>"
    return message, cap_text(clean_text(tb), max_traceback_bytes, keep_tail=True)
