"""Make anything a task was given or raised safe to store: secrets redacted
(what counts as one: :mod:`exporter.middleware.redaction`), JSON that
PostgreSQL accepts, text capped with a visible marker."""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from exporter.middleware.redaction import REDACTED, KeyRule, TextRedactor, scrub
from exporter.middleware.tracebacks import format_traceback
from exporter.text import clean_text

__all__ = ["REDACTED", "ParamsEncoder", "cap_text", "describe_exception"]

MAX_DEPTH = 32
MAX_REDACTED_PATHS = 100
TRUNCATION_MARKER = "... [truncated {n} bytes]"
_INT64 = 2**63
EMPTY_PARAMS = '{"args":[],"kwargs":{}}'


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


class _Secret(Exception):
    """Raised by the fast walk: these params need the redacting walk."""


class _Found:
    """What one redacting walk masked: where (paths into the params) and what."""

    __slots__ = ("paths", "values")

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.values: list[str] = []


# A task's positional parameters: their names, the name of its *args (or None),
# and the first position whose name is secret (sys.maxsize: none).
_Positional = tuple[tuple[str, ...], str | None, int]
_UNSEEN: Any = object()


class ParamsEncoder:
    """Turns a task's args and kwargs into the JSON text stored in ``params``, with
    secrets masked (the rules: :mod:`exporter.middleware.redaction`).

    Most params hold nothing secret-looking: they take the fast walk (keys
    checked, nothing masked), then a few substring searches of its JSON text
    for anything a value pattern could match. Only when either finds something
    are they walked again, masking, and the stored JSON gets ``"_redacted"``:
    the paths of what was masked (``["args[1]", "kwargs.config.password"]``),
    never the values.

    ``find_task`` (the middleware sets it) gives a task's function by name, so
    that positional arguments are checked under their parameters' names.
    """

    def __init__(self, *, secret_keys: tuple[str, ...], max_bytes: int) -> None:
        self.is_secret = KeyRule(secret_keys)
        self.text = TextRedactor(self.is_secret)
        self._suspect = self.text.suspect
        self._max_bytes = max_bytes
        self.find_task: Callable[[str], Callable[..., Any] | None] | None = None
        self._positional: dict[str, _Positional | None] = {}

    # The fast walk: what the params become when nothing in them is secret.

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
            if len(value) == 2 and value[0].__class__ is str and self.is_secret(value[0]):
                raise _Secret  # perhaps a pair: ("Authorization", "Bearer ...")
            return [self._walk(item, depth + 1) for item in value]
        # Subclasses (str and int enums, say) as their plain values, then the rest.
        if isinstance(value, str | int | float):
            return self._walk(_plain(value), depth)
        if isinstance(value, Mapping):
            return self._walk_map(value, depth)
        if isinstance(value, list | tuple | set | frozenset):
            if len(value) == 2 and isinstance(value, list | tuple):
                return self._walk(list(value), depth)
            return [self._walk(item, depth + 1) for item in value]
        fields = as_mapping(value)
        if fields is not None:
            return self._walk_map(fields, depth)
        return safe_repr(value)

    def _walk_map(self, value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        is_secret = self.is_secret
        for key, item in value.items():
            if key.__class__ is not str:
                key = _plain(key) if isinstance(key, str) else safe_repr(key)
            name = clean_text(key)
            if is_secret(name) and not (item is None or item.__class__ is bool):
                raise _Secret
            out[name] = self._walk(item, depth + 1)
        return out

    def encode(self, args: Any, kwargs: Any, task_name: str | None = None) -> str:
        if not args and not kwargs:
            return EMPTY_PARAMS
        try:
            if args and task_name is not None:
                positional = self.positional(task_name)
                if positional is not None and len(args) > positional[2]:
                    raise _Secret
            walk = self._walk
            doc = {
                "args": [walk(a, 2) for a in args or ()],
                "kwargs": self._walk_map(kwargs or {}, 1),
            }
            text = orjson.dumps(doc).decode()
            if self._suspect(text, json=True):
                raise _Secret
        except _Secret:
            doc = self.redact(args, kwargs, task_name)[0]
            text = orjson.dumps(doc).decode()
        if len(text) > self._max_bytes // 4 and len(text.encode("utf-8")) > self._max_bytes:
            preview = cap_text(text, self._max_bytes // 2)
            size = len(text.encode("utf-8"))
            capped = {"_truncated": True, "original_bytes": size, "preview": preview}
            if "_redacted" in doc:
                capped["_redacted"] = doc["_redacted"]
            text = orjson.dumps(capped).decode()
        return text

    # Positional arguments, by the names of the task's parameters.

    def positional(self, task_name: str) -> _Positional | None:
        """The task's positional parameters (None: the task is not known here),
        looked up once per task name."""
        known = self._positional.get(task_name, _UNSEEN)
        if known is _UNSEEN:
            func = self.find_task(task_name) if self.find_task is not None else None
            known = None if func is None else self._signature(func)
            if len(self._positional) < 10_000:
                self._positional[task_name] = known
        return known  # type: ignore[no-any-return]

    def _signature(self, func: Callable[..., Any]) -> _Positional | None:
        try:
            parameters = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            return None
        names = tuple(p.name for p in parameters if p.kind in _POSITIONAL)
        rest = next((p.name for p in parameters if p.kind is p.VAR_POSITIONAL), None)
        first = next((i for i, n in enumerate(names) if self.is_secret(n)), sys.maxsize)
        if first == sys.maxsize and rest is not None and self.is_secret(rest):
            first = len(names)
        return names, rest, first

    # The redacting walk: slower, it tracks paths and checks every string.

    def redact(
        self, args: Any, kwargs: Any, task_name: str | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        """The params document with secrets masked, and the masked values (for
        scrubbing the attempt's error text)."""
        found = _Found()
        positional = self.positional(task_name) if args and task_name is not None else None
        names, rest = (positional[0], positional[1]) if positional is not None else ((), None)
        out: list[Any] = []
        for i, item in enumerate(list(args or ())):
            name = names[i] if i < len(names) else rest
            path = f"args[{i}]"
            if name is not None and self.is_secret(name) and not _keepable(item):
                out.append(self._mask(item, path, found))
            else:
                out.append(self._rwalk(item, 2, path, found))
        doc = {"args": out, "kwargs": self._rwalk_map(kwargs or {}, 1, "kwargs", found)}
        if found.paths:
            doc["_redacted"] = found.paths[:MAX_REDACTED_PATHS]
        return doc, found.values

    def _rwalk(self, value: Any, depth: int, path: str, found: _Found) -> Any:
        cls = value.__class__
        if cls is str:
            return self._rtext(clean_text(value), path, found)
        if cls is int or cls is float or cls is bool or value is None:
            return self._walk(value, depth)
        if depth >= MAX_DEPTH:
            return "<max depth>"
        if isinstance(value, str | int | float):
            return self._rwalk(_plain(value), depth, path, found)
        if isinstance(value, Mapping):
            return self._rwalk_map(value, depth, path, found)
        if isinstance(value, list | tuple | set | frozenset):
            items = list(value)
            if (
                len(items) == 2
                and isinstance(items[0], str)
                and self.is_secret(items[0])
                and not _keepable(items[1])
            ):  # a pair: ("Authorization", "Bearer ..."), ["password", "..."]
                return [clean_text(items[0]), self._mask(items[1], f"{path}[1]", found)]
            return [
                self._rwalk(item, depth + 1, f"{path}[{i}]", found) for i, item in enumerate(items)
            ]
        fields = as_mapping(value)
        if fields is not None:
            return self._rwalk_map(fields, depth, path, found)
        return self._rtext(safe_repr(value), path, found)

    def _rwalk_map(
        self, value: Mapping[Any, Any], depth: int, path: str, found: _Found
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key.__class__ is not str:
                key = _plain(key) if isinstance(key, str) else safe_repr(key)
            name = clean_text(key)
            where = f"{path}.{name}"
            if self.is_secret(name) and not _keepable(item):
                out[name] = self._mask(item, where, found)
            else:
                out[name] = self._rwalk(item, depth + 1, where, found)
        return out

    def _rtext(self, text: str, path: str, found: _Found) -> str:
        if not self._suspect(text):
            return text
        masked = self.text.redact(text, found.values)
        if masked != text:
            found.paths.append(path)
        return masked

    def _mask(self, value: Any, path: str, found: _Found) -> str:
        found.paths.append(path)
        _leaves(value, found.values, 0)
        return REDACTED

    # Error text.

    def error_redactor(
        self, args: Any, kwargs: Any, task_name: str | None = None
    ) -> Callable[[str], str]:
        """What masks an attempt's error message and traceback: every value masked
        in its params (an exception that repeats an argument), then the patterns."""
        values = self.redact(args, kwargs, task_name)[1] if args or kwargs else []
        redact = self.text.redact

        def mask(text: str) -> str:
            return redact(scrub(text, values) if values else text)

        return mask


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _keepable(value: Any) -> bool:
    """Values shown even under a secret key: they cannot be a secret."""
    return value is None or value.__class__ is bool


def _leaves(value: Any, out: list[str], depth: int) -> None:
    """The texts a masked value could show up as in an error message."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, bool) or depth >= MAX_DEPTH:
        return
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, bytes | bytearray):
        out.append(bytes(value).decode("utf-8", "replace"))
        out.append(repr(bytes(value))[2:-1])
    elif isinstance(value, Mapping):
        for item in value.values():
            _leaves(item, out, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _leaves(item, out, depth + 1)
    else:
        fields = as_mapping(value)
        if fields is not None:
            _leaves(fields, out, depth + 1)


def as_mapping(value: Any) -> dict[str, Any] | None:
    """A dataclass instance's or a pydantic model's fields (None for anything else)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if dump is None or isinstance(value, type):
        return None
    for mode in ("json", "python"):
        try:
            fields = dump(mode=mode)
        except Exception:  # noqa: S112 - a model that cannot dump itself is shown as its repr
            continue
        if isinstance(fields, dict):
            return fields
    return None


def describe_exception(
    exc: BaseException,
    *,
    max_message_bytes: int,
    max_traceback_bytes: int,
    redact: Callable[[str], str] | None = None,
) -> tuple[str, str]:
    """``("TypeName: message", full traceback)``, each passed through ``redact``
    whole (a secret must not survive half cut) and then capped; never raises."""
    name = type(exc).__name__
    text = safe_str(exc)
    message = f"{name}: {text}" if text else name
    try:
        tb = clean_text(format_traceback(exc))
    except Exception:
        tb = f"{name}: <traceback could not be formatted>"
    if redact is not None:
        try:
            message, tb = redact(message), redact(tb)
        except Exception:  # the text cannot be checked: store none of it
            message = tb = f"{name}: <not stored: redaction failed>"
    return cap_text(message, max_message_bytes), cap_text(tb, max_traceback_bytes, keep_tail=True)
