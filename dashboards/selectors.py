"""A small PromQL scanner: the selectors of an expression, their matchers,
range and the function they sit in. Enough for lint rules on expressions this
project writes; whether an expression really parses is asked of promtool and
of Prometheus in the tests (no PromQL parser is packaged for Python)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    |(?P<range>\[[^\]]*\])
    |(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<punct>[{}(),])
    |(?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=@])""",
    re.VERBOSE,
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"offset", "bool", "and", "or", "unless", "atan2", "inf", "nan"})
_GROUP_CONTEXT = "(grouping)"


class ScanError(ValueError):
    """The expression has a character or a bracket the scanner cannot place."""


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value without quotes)
    range: str | None  # "5m", "$__rate_interval" or None for an instant selector
    call: str | None  # the innermost function or aggregation it is an argument of

    def matcher(self, label: str) -> tuple[str, str] | None:
        for name, op, value in self.matchers:
            if name == label:
                return op, value
        return None


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match or match.lastgroup is None:
            raise ScanError(f"unexpected {expr[pos : pos + 10]!r} at {pos}")
        if match.lastgroup != "ws":
            out.append((match.lastgroup, match.group()))
        pos = match.end()
    return out


def _matchers(toks: list[tuple[str, str]], i: int) -> tuple[tuple[tuple[str, str, str], ...], int]:
    """Parse ``{a="x", b=~"y"}`` starting at the ``{`` at ``i``; returns the index after ``}``."""
    found: list[tuple[str, str, str]] = []
    i += 1
    while toks[i][1] != "}":
        (kind, label), (_, op), (vkind, value) = toks[i], toks[i + 1], toks[i + 2]
        if kind != "ident" or op not in {"=", "!=", "=~", "!~"} or vkind != "string":
            raise ScanError(f"bad matcher near {label!r}")
        found.append((label, op, value[1:-1]))
        i += 3
        if toks[i][1] not in {",", "}"}:
            raise ScanError(f"expected ',' or '}}' after matcher {label!r}")
        if toks[i][1] == ",":
            i += 1
    return tuple(found), i + 1


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of ``expr``, in order."""
    toks = [*tokens(expr), ("end", "")]
    stack: list[str | None] = []
    pending: str | None = None  # a function or aggregation waiting for its "("
    grouping = False
    found: list[Selector] = []
    i = 0
    while toks[i][0] != "end":
        kind, text = toks[i]
        nxt = toks[i + 1][1]
        if text == "(":
            # "sum by (x) (...)": the grouping's "(" keeps "sum" waiting for the next one.
            stack.append(_GROUP_CONTEXT if grouping else pending)
            pending = pending if grouping else None
            grouping = False
        elif text == ")":
            if not stack:
                raise ScanError("unbalanced ')'")
            stack.pop()
        elif kind == "ident" and stack and stack[-1] == _GROUP_CONTEXT:
            pass  # a label name in by (...) / on (...)
        elif kind == "ident" and text in _GROUPING:
            grouping = nxt == "("  # group_left may stand without a label list
        elif kind == "ident" and text.lower() in _KEYWORDS:
            pass
        elif kind == "ident" and (nxt == "(" or nxt in _GROUPING):
            pending = text
        elif kind == "ident" or text == "{":
            name = text if kind == "ident" else ""
            j = i + 1 if kind == "ident" else i
            matchers: tuple[tuple[str, str, str], ...] = ()
            if toks[j][1] == "{":
                matchers, j = _matchers(toks, j)
            rng = toks[j][1][1:-1] if toks[j][0] == "range" else None
            found.append(Selector(name, matchers, rng, stack[-1] if stack else None))
            i = j if rng is None else j + 1
            continue
        i += 1
    if stack:
        raise ScanError("unbalanced '('")
    return found
