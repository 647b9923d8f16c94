"""Every Prometheus query of every generated panel, for the linter and for the
live test that runs them against a real Prometheus."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dashboards import promql, sql
from dashboards.common import ALL_REGEX, TASK_ALL_VALUE, variables
from dashboards.config import DEFAULT, Config
from dashboards.lint import Problem, lint, panels
from dashboards.normalize import normalize
from dashboards.recording import recorded_names
from dashboards.render import boards
from exporter.slo.recording import recorded_names as slo_recorded_names
from exporter.slo.windows import DEFAULT_PROFILE

ALERTS = "ALERTS"


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str
    alert_only: bool  # the panel is empty unless an alert fires


def panel_queries(cfg: Config = DEFAULT) -> list[PanelQuery]:
    """Every PromQL expression of every panel of every dashboard, with the
    panel's title and whether the panel only shows data while an alert fires."""
    found: list[PanelQuery] = []
    for uid, board in boards(cfg).items():
        for panel in panels(normalize(board.dashboard)):
            for target in panel.get("targets", []):
                if "expr" in target:
                    title = panel["title"]
                    found.append(PanelQuery(uid, title, target["expr"], title in board.alert_only))
    return found


@dataclass(frozen=True)
class SqlQuery:
    dashboard: str
    panel: str
    sql: str


def sql_queries(cfg: Config = DEFAULT) -> list[SqlQuery]:
    """Every PostgreSQL query of every panel."""
    return [
        SqlQuery(uid, panel["title"], target["rawSql"])
        for uid, board in boards(cfg).items()
        for panel in panels(normalize(board.dashboard))
        for target in panel.get("targets", [])
        if "rawSql" in target
    ]


def all_values() -> dict[str, str]:
    """The custom "All" value of every variable that has one, by name."""
    return {t.name: t.allValue for t in variables().list if getattr(t, "allValue", None)}


def substitute_sql(
    raw: str, *, start: str, end: str, task_names: Sequence[str] | None = None
) -> str:
    """``raw`` as Grafana's PostgreSQL datasource sends it (ISO 8601 UTC bounds) with
    ``task_names`` selected in the task_name variable; None selects "All"."""
    time_filter = re.compile(r"\$__timeFilter\((\w+)\)")
    raw = time_filter.sub(rf"\1 BETWEEN '{start}' AND '{end}'", raw)
    return sql.interpolate(raw, selected={"task_name": task_names}, all_values=all_values())


@dataclass(frozen=True)
class VariableQuery:
    dashboard: str
    variable: str
    selector: str  # the series to read the label from
    label: str


_LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)")


def variable_queries(cfg: Config = DEFAULT) -> list[VariableQuery]:
    """Every ``label_values(selector, label)`` variable of every dashboard."""
    found: list[VariableQuery] = []
    for uid, board in boards(cfg).items():
        for template in normalize(board.dashboard)["templating"]["list"]:
            match = _LABEL_VALUES.fullmatch(str(template.get("query", "")))
            if template["type"] == "query" and match:
                selector, label = match["selector"] or "", match["label"]
                found.append(VariableQuery(uid, template["name"], selector, label))
    return found


def substitute(
    expr: str,
    *,
    rate_interval: str = "1m",
    job: str = ALL_REGEX,
    instance: str = ALL_REGEX,
    task_name: str = TASK_ALL_VALUE,
) -> str:
    """``expr`` with Grafana's variables replaced as Grafana would (regex values
    for the multi-value variables; the defaults are their "All" values)."""
    values = {
        "$__rate_interval": rate_interval,
        "$task_name": task_name,
        "$instance": instance,
        "$job": job,
    }
    for variable, value in values.items():
        expr = expr.replace(variable, value)
    return expr


def _recorded(cfg: Config) -> frozenset[str]:
    """The shipped rules' records and those of any SLO file's rules."""
    return recorded_names(cfg) | slo_recorded_names(DEFAULT_PROFILE)


def known_metrics(cfg: Config = DEFAULT) -> frozenset[str]:
    return promql.exposed_names() | _recorded(cfg) | {ALERTS}


def task_metrics(cfg: Config = DEFAULT) -> frozenset[str]:
    """Sample names that carry task_name, so every selector of them must filter by it."""
    raw = {s for s in promql.exposed_names() if promql.base_name(s) in promql.TASK_METRICS}
    return frozenset(raw | {r for r in _recorded(cfg) if r.startswith("task_name")})


def lint_all(cfg: Config = DEFAULT) -> list[Problem]:
    """Problems of every generated dashboard (empty when all is well)."""
    known, tasks = known_metrics(cfg), task_metrics(cfg)
    problems: list[Problem] = []
    for board in boards(cfg).values():
        problems += lint(normalize(board.dashboard), known=known, task_metrics=tasks)
    return problems
