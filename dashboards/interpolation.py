"""A PostgreSQL panel's SQL as Grafana sends it, so that the tests can run it.

Grafana turns ``rawSql`` into SQL in two steps. The browser replaces the template
variables (``templateSrv.replace``): ``${var:sqlstring}`` becomes each selected
value single-quoted, ``'`` doubled, comma-joined; a text box's value is one value
(empty: ``''``); "All" becomes the variable's custom all value as it is, or else
every option formatted. Then the server expands its macros on the whole text,
literals included: ``$__timeFilter(col)`` is ``col BETWEEN '<from>' AND '<to>'``,
``$__timeFrom()`` and ``$__timeTo()`` the quoted bounds, all RFC 3339 in UTC
(Go's RFC3339Nano: no trailing zeros in the fraction), ``$__unixEpochFrom()`` and
``$__unixEpochTo()`` epoch seconds, ``$__interval`` and ``$__interval_ms`` the
panel's interval.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboards.sql import SAFE_FORMAT, sqlstring

Json = dict[str, Any]
ALL = None  # a selection of "All"
Value = Sequence[str] | str | None
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::(?P<fmt>[^}]+))?\}|\$(?P<plain>[A-Za-z]\w*)")
_MACRO = re.compile(r"\$__(?P<name>\w+)\((?P<args>[^)]*)\)")
_GLOBAL = re.compile(r"\$__interval(?P<ms>_ms)?\b")


class UnknownMacro(ValueError):
    """The SQL calls a macro this module does not expand (the tests must not
    pretend to run it)."""


def rfc3339(at: datetime) -> str:
    """Go's ``time.RFC3339Nano`` of a UTC time (microseconds at most here)."""
    text = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


@dataclass(frozen=True)
class Variable:
    """What Grafana knows of a variable when it interpolates it."""

    name: str
    options: tuple[str, ...] = ()  # every option but "All" (custom or query results)
    all_value: str | None = None

    @classmethod
    def from_json(cls, template: Json, options: Sequence[str] = ()) -> Variable:
        own = tuple(o["value"] for o in template.get("options", []) if o["value"] != "$__all")
        return cls(template["name"], tuple(options) or own, template.get("allValue") or None)


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime
    interval: timedelta = field(default=timedelta(minutes=1))


def _format(variable: Variable, value: Value, fmt: str | None) -> str:
    if fmt != SAFE_FORMAT:
        raise ValueError(f"${{{variable.name}:{fmt}}}: only {SAFE_FORMAT} is expanded here")
    if value is ALL:
        if variable.all_value is not None:
            return variable.all_value  # inserted as it is, whatever the format
        return sqlstring(variable.options)
    return sqlstring([value] if isinstance(value, str) else value)


def variables(raw: str, known: Mapping[str, Variable], values: Mapping[str, Value]) -> str:
    """The browser's step: every dashboard variable replaced by its value."""

    def replace(match: re.Match[str]) -> str:
        name = match["name"] or match["plain"]
        if name not in known:
            return match.group()
        return _format(known[name], values[name], match["fmt"])

    return _VARIABLE.sub(replace, raw)


def _interval(interval: timedelta) -> str:
    total = int(interval.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


def macros(raw: str, time: TimeRange) -> str:
    """The server's step: Grafana's PostgreSQL macros and interval globals."""
    start, end = rfc3339(time.start), rfc3339(time.end)

    def replace(match: re.Match[str]) -> str:
        name, args = match["name"], match["args"].strip()
        if name == "timeFilter":
            return f"{args} BETWEEN '{start}' AND '{end}'"
        if name == "timeFrom":
            return f"'{start}'"
        if name == "timeTo":
            return f"'{end}'"
        if name == "unixEpochFrom":
            return str(int(time.start.timestamp()))
        if name == "unixEpochTo":
            return str(int(time.end.timestamp()))
        raise UnknownMacro(match.group())

    raw = _MACRO.sub(replace, raw)
    ms = int(time.interval.total_seconds() * 1000)
    return _GLOBAL.sub(lambda m: str(ms) if m["ms"] else _interval(time.interval), raw)


def expand(
    raw: str, *, time: TimeRange, known: Mapping[str, Variable], values: Mapping[str, Value]
) -> str:
    """``raw`` as Grafana's PostgreSQL datasource runs it."""
    return macros(variables(raw, known, values), time)
