"""Grafana's dashboard-linter rules (a Go tool that cannot be installed here),
rewritten over the dashboard JSON, plus this project's own rules.

Rule names follow dashboard-linter. Two deliberate differences, both stricter
or documented: the PostgreSQL datasource variable is called ``postgres``
(the linter only knows Prometheus), and selectors of recording rules, which
are aggregated ``without (instance)``, need ``job`` and ``task_name``
matchers but cannot carry an ``instance`` one (nor can ``ALERTS``). Dashboards
without a Prometheus panel (history, execution) need no job or instance
variable, and their query variables are SQL, held to the panels' SQL rules.
The links between dashboards are checked across all of them (dashboards/links.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dashboards import sql
from dashboards.common import ALL_REGEX, TASK_ALL_VALUE
from dashboards.selectors import ScanError, Selector, selectors

Json = dict[str, Any]
DATASOURCE_VARS = {"${datasource}": "prometheus", "${postgres}": "grafana-postgresql-datasource"}
ALLOWED_UIDS = {*DATASOURCE_VARS, "-- Grafana --"}
RATE_FUNCS = {"rate", "irate", "increase"}
UNITS = frozenset(
    [
        "none",
        "short",
        "percent",
        "percentunit",
        "s",
        "ms",
        "µs",
        "ns",
        "m",
        "h",
        "d",
        "dtdurations",
        "dtdurationms",
        "ops",
        "reqps",
        "rps",
        "wps",
        "iops",
        "cps",
        "opm",
        "rpm",
        "bytes",
        "decbytes",
        "bool",
        "dateTimeAsIso",
    ]
)
# A query of log rows reads the time range's partitions only, in an indexed order,
# and a bounded number of them; a query of live rows reads the log's partial index.
TIME_FILTER = "$__timeFilter(created_at)"
LIVE_ROWS = "status IN ('pending', 'running')"
MAX_ROWS = 500
LOG_RELATIONS = frozenset({"task_execution_logs", sql.LOG_VIEW, sql.DETAILS_VIEW})
_LIMIT = re.compile(r"\bORDER BY\b[^;]*\bLIMIT (\d+)\b")


@dataclass(frozen=True)
class Problem:
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


def panels(data: Json) -> Iterator[Json]:
    """Every panel that is not a row, including panels inside collapsed rows."""
    for panel in data.get("panels", []):
        if panel.get("type") == "row":
            yield from panels(panel)
        else:
            yield panel


def _prometheus_panels(data: Json) -> bool:
    return any(_uid(p.get("datasource")) == "${datasource}" for p in panels(data))


def _variables(data: Json) -> Iterator[Problem]:
    templates = {t["name"]: t for t in data.get("templating", {}).get("list", [])}
    for name, query in (("datasource", "prometheus"), ("postgres", DATASOURCE_VARS["${postgres}"])):
        t = templates.get(name, {})
        if t.get("type") != "datasource" or t.get("query") != query:
            yield Problem("template-datasource-rule", name, f"needs a {query} datasource variable")
    prometheus = _prometheus_panels(data)
    alls = {"job": ALL_REGEX, "instance": ALL_REGEX} if prometheus else {}
    if prometheus or "task_name" in templates:
        alls["task_name"] = TASK_ALL_VALUE
    for name, all_value in alls.items():
        t = templates.get(name)
        rule = f"template-{name.replace('_name', '')}-rule"
        if t is None:
            yield Problem(rule, name, "variable missing")
            continue
        wanted = ("${datasource}", "$datasource") if prometheus else ("${postgres}",)
        if _uid(t.get("datasource")) not in wanted:
            yield Problem(rule, name, f"must query the {wanted[0]} variable")
        if not (t.get("multi") and t.get("includeAll") and t.get("allValue") == all_value):
            yield Problem(rule, name, f"must be multi-select with All = {all_value!r}")
    for t in templates.values():
        if t.get("type") != "query":
            continue
        if t.get("refresh") != 2:
            yield Problem("template-on-time-change-reload-rule", t["name"], "refresh must be 2")
        if _uid(t.get("datasource")) == "${postgres}":
            for problem in _sql(str(t.get("query", ""))):
                yield Problem(problem.rule, f"variable {t['name']}", problem.message)
        elif not str(t.get("query", "")).startswith("label_values("):
            yield Problem("template-label-promql-rule", t["name"], "use label_values(...)")


def _sql(raw: str) -> Iterator[Problem]:
    """The rules of one SQL query (a panel's or a variable's); ``where`` is left
    to the caller."""
    read = sql.relations(raw)
    if read & LOG_RELATIONS and TIME_FILTER not in raw and LIVE_ROWS not in raw:
        yield Problem("target-sql-rule", "", f"reads the log without {TIME_FILTER}")
    if TIME_FILTER in raw:
        limit = _LIMIT.search(raw)
        if limit is None or int(limit[1]) > MAX_ROWS:
            yield Problem(
                "target-sql-rule", "", f"lists rows without ORDER BY ... LIMIT <= {MAX_ROWS}"
            )
    if read & sql.ROLLUPS and not {"$__timeFrom()", "$__timeTo()"} <= set(
        re.findall(r"\$__time(?:From|To)\(\)", raw)
    ):
        yield Problem(
            "target-sql-rule", "", "reads the rollups without $__timeFrom() and $__timeTo()"
        )
    for problem in sql.problems(raw):
        yield Problem("target-sql-variable-rule", "", problem)
    unreadable = read - sql.READER_RELATIONS
    if unreadable:
        yield Problem("target-sql-source-rule", "", f"the reader role cannot read {unreadable}")


def _layout(data: Json) -> Iterator[Problem]:
    if data.get("schemaVersion", 0) < 36:
        yield Problem("dashboard-schema-rule", data.get("title", "?"), "schemaVersion < 36")
    for key in ("rows", "hideControls", "sharedCrosshair", "style"):
        if key in data:
            yield Problem("dashboard-schema-rule", data.get("title", "?"), f"legacy key {key!r}")
    cells: set[tuple[int, int]] = set()
    ids: set[int] = set()
    for panel in data.get("panels", []):
        title = panel.get("title", "?")
        if panel.get("id") in ids:
            yield Problem("panel-layout-rule", title, f"duplicate id {panel.get('id')}")
        ids.add(panel.get("id", 0))
        pos = panel.get("gridPos") or {}
        if not pos or pos["x"] + pos["w"] > 24:
            yield Problem("panel-layout-rule", title, f"bad gridPos {pos}")
            continue
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        if mine & cells:
            yield Problem("panel-layout-rule", title, "overlaps another panel")
        cells |= mine


def _legacy(value: Any, where: str) -> Iterator[Problem]:
    """grafanalib's legacy shapes (the string "null"), and any datasource reference,
    anywhere in the JSON, that is neither a variable nor Grafana's built-in one."""
    if isinstance(value, dict):
        ref = value.get("datasource")
        if isinstance(ref, str) or (isinstance(ref, dict) and ref.get("uid") not in ALLOWED_UIDS):
            yield Problem("datasource-uid-rule", where, f"hard-coded datasource {ref!r}")
        for key, item in value.items():
            yield from _legacy(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _legacy(item, f"{where}[{i}]")
    elif value == "null":
        yield Problem("legacy-shape-rule", where, 'the string "null" (use JSON null)')


def _uid(ref: Any) -> Any:
    """The uid of a datasource reference (an object, or a legacy name string)."""
    return ref.get("uid") if isinstance(ref, dict) else ref


def _panel(panel: Json) -> Iterator[Problem]:
    title = panel.get("title") or "<untitled>"
    if not panel.get("title") or not panel.get("description"):
        yield Problem("panel-title-description-rule", title, "needs a title and a description")
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if unit not in UNITS:
        yield Problem("panel-units-rule", title, f"invalid or missing unit {unit!r}")
    uid = _uid(panel.get("datasource"))
    if uid not in DATASOURCE_VARS:
        yield Problem("panel-datasource-rule", title, f"datasource {uid!r} is not a variable")
    if not panel.get("targets"):
        yield Problem("panel-no-targets-rule", title, "no targets")
    for target in panel.get("targets", []):
        if _uid(target.get("datasource")) != uid:
            yield Problem("panel-datasource-rule", title, "target datasource differs from panel")


def _selector(s: Selector, known: frozenset[str], task_metrics: frozenset[str]) -> Iterator[str]:
    recorded = ":" in s.name
    if s.name not in known:
        yield f"target-known-metric-rule: unknown metric {s.name!r}"
    if s.matcher("job") != ("=~", "$job"):
        yield f'target-job-rule: {s.name} lacks job=~"$job"'
    if not recorded and s.name != "ALERTS" and s.matcher("instance") != ("=~", "$instance"):
        yield f'target-instance-rule: {s.name} lacks instance=~"$instance"'
    if s.name in task_metrics and s.matcher("task_name") != ("=~", "$task_name"):
        yield f'target-task-rule: {s.name} lacks task_name=~"$task_name"'
    if s.range is not None and s.range != "$__rate_interval":
        yield f"target-rate-interval-rule: {s.name}[{s.range}] must use $__rate_interval"
    if s.name.endswith("_total") and (s.range is None or s.call not in RATE_FUNCS):
        yield f"target-counter-agg-rule: counter {s.name} outside rate/irate/increase"


def _targets(panel: Json, known: frozenset[str], task_metrics: frozenset[str]) -> Iterator[Problem]:
    title = panel.get("title") or "<untitled>"
    for target in panel.get("targets", []):
        if "rawSql" in target:
            for problem in _sql(target["rawSql"]):
                yield Problem(problem.rule, title, problem.message)
            continue
        try:
            found = selectors(target.get("expr", ""))
        except ScanError as exc:
            yield Problem("target-promql-rule", title, f"{target.get('expr')!r}: {exc}")
            continue
        if not found:
            yield Problem("target-promql-rule", title, "no selector in the expression")
        for s in found:
            for message in _selector(s, known, task_metrics):
                rule, text = message.split(": ", 1)
                yield Problem(rule, title, text)


def lint(data: Json, *, known: frozenset[str], task_metrics: frozenset[str]) -> list[Problem]:
    """Every problem of one dashboard. ``known`` is every metric a query may
    name; ``task_metrics`` those that must carry the task_name filter."""
    problems = [*_variables(data), *_layout(data), *_legacy(data, data.get("title", "?"))]
    for panel in panels(data):
        problems += [*_panel(panel), *_targets(panel, known, task_metrics)]
    return problems
