"""What the dashboards share: uids, variables, and the ``Board`` they are built into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafanalib import core as g

from dashboards.panels import PROMETHEUS, Cell, layout
from exporter.metrics import names as n

OVERVIEW_UID = "taskiq-overview"
TASK_DETAIL_UID = "taskiq-task-detail"
HISTORY_UID = "taskiq-history"
EXECUTION_UID = "taskiq-execution"
TAGS = ["taskiq"]
DEFAULT_EXPORTER_URL = "http://127.0.0.1:8000"
# A series every exporter exposes, even before the first task and while its
# database is down.
_ALWAYS = n.STORE_UP
# The "All" of job and instance, a regex for PromQL's =~ matchers.
ALL_REGEX = ".+"
# The "All" of task_name, which lands in PromQL and in SQL. Grafana inserts a custom
# all value as it is, whatever the format asked for (${task_name:sqlstring} too), so
# it must read right in both: in `task_name=~"'|.+|'"` it is a regex matching every
# name (the two quotes are alternatives of their own), in
# `IN (${task_name:sqlstring})` the string literal '|.+|', which the SQL panels test
# for (log_sql.task_filter).
TASK_ALL_LITERAL = "|.+|"
TASK_ALL_VALUE = f"'{TASK_ALL_LITERAL}'"


@dataclass(frozen=True)
class Board:
    """A dashboard and the titles of its panels that only show data while an
    alert fires (the live test does not require data from those)."""

    dashboard: g.Dashboard
    alert_only: frozenset[str] = frozenset()


def _datasource(name: str, label: str, plugin: str) -> g.Template:
    return g.Template(name=name, label=label, query=plugin, type="datasource")


def _label(name: str, label: str, query: str, *, all_value: str = ALL_REGEX) -> g.Template:
    return g.Template(
        name=name,
        label=label,
        query=query,
        dataSource=PROMETHEUS,
        multi=True,
        includeAll=True,
        allValue=all_value,
        refresh=g.REFRESH_ON_TIME_RANGE_CHANGE,
    )


def _prometheus_variables() -> list[g.Template]:
    task_source = f'{n.total(n.TASKS_COMPLETED)}{{job=~"$job", instance=~"$instance"}}'
    return [
        _label("job", "Job", f"label_values({_ALWAYS}, job)"),
        _label("instance", "Instance", f'label_values({_ALWAYS}{{job=~"$job"}}, instance)'),
        _label(
            "task_name",
            "Task",
            f"label_values({task_source}, {n.LABEL_TASK_NAME})",
            all_value=TASK_ALL_VALUE,
        ),
    ]


def textbox(name: str, label: str, default: str = "") -> g.Template:
    return g.Template(name=name, label=label, query=default, default=default, type="textbox")


def variables(*, extra: Sequence[g.Template] | None = None) -> g.Templating:
    """The datasource variables, the exporter's URL, and ``extra`` (by default the
    Prometheus dashboards' job, instance and task_name). With ``extra`` given, the
    Prometheus datasource variable is hidden: the dashboard only carries it along
    its links."""
    prometheus = _datasource("datasource", "Data source", "prometheus")
    if extra is not None:
        prometheus.hide = g.HIDE_VARIABLE
    return g.Templating(
        list=[
            prometheus,
            _datasource("postgres", "PostgreSQL", "grafana-postgresql-datasource"),
            *(_prometheus_variables() if extra is None else extra),
            textbox("exporter_url", "Exporter URL", DEFAULT_EXPORTER_URL),
        ]
    )


def dashboard(
    *,
    title: str,
    uid: str,
    description: str,
    rows: Sequence[tuple[str, Sequence[Cell]]],
    templating: g.Templating | None = None,
    refresh: str = "30s",
    since: str = "now-3h",
) -> g.Dashboard:
    return g.Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=TAGS,
        timezone="browser",
        refresh=refresh,
        time=g.Time(since, "now"),
        graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        editable=False,
        templating=templating or variables(),
        links=[
            g.DashboardLink(
                title="TaskIQ dashboards",
                tags=TAGS,
                asDropdown=True,
                includeVars=True,
                keepTime=True,
            )
        ],
        panels=layout(rows),
    )
