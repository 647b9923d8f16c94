"""What both dashboards share: variables, links, and the ``Board`` they are built into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafanalib import core as g

from dashboards.panels import PROMETHEUS, Cell, layout
from exporter.metrics import names as n

OVERVIEW_UID = "taskiq-overview"
TASK_DETAIL_UID = "taskiq-task-detail"
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
# for (sections.task_filter).
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


def variables() -> g.Templating:
    task_source = f'{n.total(n.TASKS_COMPLETED)}{{job=~"$job", instance=~"$instance"}}'
    return g.Templating(
        list=[
            _datasource("datasource", "Data source", "prometheus"),
            _datasource("postgres", "PostgreSQL", "grafana-postgresql-datasource"),
            _label("job", "Job", f"label_values({_ALWAYS}, job)"),
            _label("instance", "Instance", f'label_values({_ALWAYS}{{job=~"$job"}}, instance)'),
            _label(
                "task_name",
                "Task",
                f"label_values({task_source}, {n.LABEL_TASK_NAME})",
                all_value=TASK_ALL_VALUE,
            ),
            g.Template(
                name="exporter_url",
                label="Exporter URL",
                query=DEFAULT_EXPORTER_URL,
                default=DEFAULT_EXPORTER_URL,
                type="textbox",
            ),
        ]
    )


def history_link(title: str, path: str) -> dict[str, object]:
    """A data link into the exporter's history API, as the browser reaches it."""
    return {"title": title, "url": f"${{exporter_url}}{path}", "targetBlank": True}


def task_detail_link() -> dict[str, object]:
    """Per-series link from an overview panel to the task detail dashboard."""
    return {
        "title": "Task detail: ${__field.labels.task_name}",
        "url": (
            f"/d/{TASK_DETAIL_UID}/taskiq-task-detail?${{__url_time_range}}"
            "&${datasource:queryparam}&${postgres:queryparam}&${job:queryparam}"
            "&${instance:queryparam}&${exporter_url:queryparam}"
            "&var-task_name=${__field.labels.task_name}"
        ),
    }


def dashboard(
    *, title: str, uid: str, description: str, rows: Sequence[tuple[str, Sequence[Cell]]]
) -> g.Dashboard:
    return g.Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=TAGS,
        timezone="browser",
        refresh="30s",
        time=g.Time("now-3h", "now"),
        graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        editable=False,
        templating=variables(),
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
