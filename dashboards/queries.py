"""Every Prometheus query of every generated panel, for the linter and for the
live test that runs them against a real Prometheus."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from dashboards import links, promql
from dashboards.common import ALL_REGEX, TASK_ALL_VALUE
from dashboards.config import DEFAULT, Config
from dashboards.interpolation import ALL, TimeRange, Value, Variable, expand
from dashboards.lint import Problem, lint, panels
from dashboards.log_sql import ATTEMPT, ERROR, STATUS, TASK
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
    panel: str  # a panel's title, or "variable <name>"
    sql: str
    time_from: str | None = None  # the panel's relative time override ("24h")


def sql_queries(cfg: Config = DEFAULT) -> list[SqlQuery]:
    """Every PostgreSQL query of every panel."""
    return [
        SqlQuery(uid, panel["title"], target["rawSql"], panel.get("timeFrom"))
        for uid, board in boards(cfg).items()
        for panel in panels(normalize(board.dashboard))
        for target in panel.get("targets", [])
        if "rawSql" in target
    ]


def sql_variable_queries(cfg: Config = DEFAULT) -> list[SqlQuery]:
    """Every query variable that runs SQL."""
    return [
        SqlQuery(uid, f"variable {t['name']}", t["query"])
        for uid, board in boards(cfg).items()
        for t in normalize(board.dashboard)["templating"]["list"]
        if t["type"] == "query" and t.get("datasource", {}).get("uid") == "${postgres}"
    ]


def grafana_variables(cfg: Config = DEFAULT) -> dict[str, Variable]:
    """What Grafana knows of each variable the SQL uses (the same on every dashboard
    that has it)."""
    found: dict[str, Variable] = {}
    for board in boards(cfg).values():
        for t in normalize(board.dashboard)["templating"]["list"]:
            if t["type"] in ("query", "custom", "textbox"):
                found.setdefault(t["name"], Variable.from_json(t))
    return found


# What the SQL variables hold when a dashboard opens: every task, every status,
# empty text boxes.
DEFAULT_VALUES: dict[str, Value] = {TASK: ALL, STATUS: ALL, ERROR: "", ATTEMPT: ""}


def substitute_sql(
    raw: str,
    *,
    start: str,
    end: str,
    task_names: Sequence[str] | None = None,
    values: Mapping[str, Value] | None = None,
) -> str:
    """``raw`` as Grafana's PostgreSQL datasource sends it (RFC 3339 UTC bounds) with
    ``task_names`` selected in the task_name variable (None: "All") and ``values``
    in the others (by default those of DEFAULT_VALUES)."""
    chosen = {**DEFAULT_VALUES, TASK: task_names, **(values or {})}
    time = TimeRange(datetime.fromisoformat(start), datetime.fromisoformat(end))
    return expand(raw, time=time, known=grafana_variables(), values=chosen)


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
    dashboards = {uid: normalize(board.dashboard) for uid, board in boards(cfg).items()}
    for data in dashboards.values():
        problems += lint(data, known=known, task_metrics=tasks)
    for problem in links.problems(dashboards):
        problems.append(Problem("link-target-rule", "links", problem))
    return problems
