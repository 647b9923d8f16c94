"""Grafana template variables in the SQL of PostgreSQL panels: where they sit, in
which format, and the relations a query reads.

Grafana interpolates ``rawSql`` as text before PostgreSQL sees it. The only safe
way to put a variable's value into SQL is the ``sqlstring`` format outside any
quote or comment: each value single-quoted with ``'`` doubled, comma-joined.
``$var``, ``${var}`` and ``${var:regex}`` escape nothing a SQL literal cares
about; inside ``'...'`` even ``sqlstring`` breaks out (its quotes close the
literal); inside a ``--`` comment a newline in the value ends the comment.
Grafana's own macros and globals (``$__timeFilter(col)``, ``$__timeFrom()``,
``$__interval``) are computed by Grafana and are fine anywhere code may stand.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

SAFE_FORMAT = "sqlstring"
# What Grafana's role may SELECT (exporter/assets/postgres/grants.sql): the
# execution log without params and tracebacks, one attempt's redacted params and
# traceback (unless grants.sql ran with reader_details=off), and the rollups.
LOG_VIEW = "task_execution_logs_redacted"
DETAILS_VIEW = "task_execution_details"
ROLLUPS = frozenset({"task_execution_rollups", "task_execution_rollups_hourly"})
READER_RELATIONS = frozenset({LOG_VIEW, DETAILS_VIEW, *ROLLUPS})
# Grafana's variable syntaxes (public/app/features/variables/utils.ts): $var,
# [[var]], [[var:fmt]], ${var}, ${var.field}, ${var:fmt}.
_REFERENCE = re.compile(
    r"\$(?P<plain>\w+)"
    r"|\[\[(?P<bracket>\w+?)(?::(?P<bracket_fmt>\w+))?\]\]"
    r"|\$\{(?P<braced>\w+)(?:\.(?P<field>[^:^}]+))?(?::(?P<braced_fmt>[^}]+))?\}"
)
# What PostgreSQL reads as one unit, so that a reference inside it is found as
# such: string literals ('' escapes a quote), quoted identifiers, comments and
# dollar-quoted bodies ($tag$...$tag$, whose tag cannot start with a digit).
_SEGMENT = re.compile(
    r"""(?P<literal>'(?:[^']|'')*(?:'|\Z))
    |(?P<identifier>"(?:[^"]|"")*(?:"|\Z))
    |(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    |(?P<dollar>\$(?P<tag>[A-Za-z_]\w*|)\$.*?(?:\$(?P=tag)\$|\Z))
    |(?P<code>[^'"$/-]+|.)""",
    re.VERBOSE | re.DOTALL,
)
_PLACES = {
    "literal": "a string literal",
    "identifier": "a quoted identifier",
    "comment": "a comment",
    "dollar": "a dollar-quoted string",
}
_RELATION = re.compile(r"\b(?:FROM|JOIN)\s+(?P<name>[A-Za-z_][\w.]*)", re.IGNORECASE)
# A common table expression's name: `WITH name AS (` or `, name AS MATERIALIZED (`.
_CTE = re.compile(
    r"(?:\bWITH|,)\s+(?P<name>[A-Za-z_]\w*)\s+AS\s+(?:NOT\s+)?(?:MATERIALIZED\s+)?\(",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Reference:
    """A template variable reference: its text, variable, format and where it sits
    (``code``, ``literal``, ``identifier``, ``comment`` or ``dollar``)."""

    text: str
    name: str
    format: str | None
    where: str

    @property
    def builtin(self) -> bool:
        """Grafana's macros and global variables: ``$__timeFilter``, ``$__interval``..."""
        return self.name.startswith("__")


def _segments(sql: str) -> Iterator[tuple[str, str]]:
    """(kind, text) in order; adjacent code is joined (``$`` and ``{`` match apart)."""
    code = ""
    for match in _SEGMENT.finditer(sql):
        kind = "dollar" if match.lastgroup == "tag" else match.lastgroup or "code"
        if kind == "code":
            code += match.group()
            continue
        if code:
            yield "code", code
            code = ""
        yield kind, match.group()
    if code:
        yield "code", code


def references(sql: str) -> list[Reference]:
    """Every template variable reference of ``sql``, in order."""
    found: list[Reference] = []
    for where, text in _segments(sql):
        for m in _REFERENCE.finditer(text):
            name = m["plain"] or m["bracket"] or m["braced"]
            fmt = m["bracket_fmt"] or m["braced_fmt"]
            found.append(Reference(m.group(), name, fmt, where))
    return found


def problems(sql: str) -> list[str]:
    """Why the variables of ``sql`` are unsafe; empty when every one is safe."""
    found = []
    for ref in references(sql):
        if ref.where != "code":
            found.append(f"{ref.text} inside {_PLACES[ref.where]}: nothing escapes it there")
        elif not ref.builtin and ref.format != SAFE_FORMAT:
            found.append(f"{ref.text}: use ${{{ref.name}:{SAFE_FORMAT}}}")
    return found


def relations(sql: str) -> set[str]:
    """The tables and views named after FROM or JOIN outside literals and comments,
    common table expressions left out (conservative: ``EXTRACT(epoch FROM col)``
    would name ``col``)."""
    code = " ".join(text for where, text in _segments(sql) if where == "code")
    ctes = {m["name"].lower() for m in _CTE.finditer(code)}
    return {m["name"].lower() for m in _RELATION.finditer(code)} - ctes


def sqlstring(values: Sequence[str]) -> str:
    """Grafana's ``sqlstring`` format of selected values."""
    return ",".join("'" + value.replace("'", "''") + "'" for value in values)


def interpolate(
    sql: str, *, selected: Mapping[str, Sequence[str] | None], all_values: Mapping[str, str]
) -> str:
    """``${var:sqlstring}`` replaced as Grafana does: the selected values quoted,
    or, for a variable whose "All" is selected (None), its custom all value as it
    is: Grafana formats a custom all value with no format but ``text`` and
    ``percentencode``. Other references are left alone."""

    def replace(match: re.Match[str]) -> str:
        name, fmt = match["braced"], match["braced_fmt"]
        if fmt != SAFE_FORMAT or name not in selected:
            return match.group()
        values = selected[name]
        return all_values[name] if values is None else sqlstring(values)

    return _REFERENCE.sub(replace, sql)
