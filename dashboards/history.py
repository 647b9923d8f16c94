"""TaskIQ history: the execution log in PostgreSQL, searchable by task, status,
error text and attempt or task id, with per-task health from the rollups and the
latest status changes."""

from __future__ import annotations

from grafanalib import core as g

from dashboards import links
from dashboards import log_sql as s
from dashboards.common import (
    HISTORY_UID,
    TASK_ALL_VALUE,
    Board,
    dashboard,
    textbox,
    variables,
)
from dashboards.config import Config
from dashboards.panels import POSTGRES, Cell, sql_table
from dashboards.sections import success_steps

ROW_LINKS = {
    "id": [
        links.execution("Attempt, params and traceback"),
        links.api_link("Record and traceback (API)", "/history/${__value.raw}"),
    ],
    s.TASK: [
        links.task_detail("Task detail at that time", task="${__value.raw:percentencode}"),
    ],
    "task_id": [
        links.history(
            "Every attempt of this task id",
            task="${__data.fields.task_name:percentencode}",
            attempt="${__value.raw:percentencode}",
            time=links.ROW_TIME,
        ),
        links.api_link("Every attempt of this task id (API)", "/history/task/${__value.raw}"),
    ],
}
UNITS = {"duration_ms": "ms", "queue_wait_ms": "ms", "attempt": "none", "id": "none"}
HIDDEN = (s.RANGE_FROM, s.RANGE_TO)


def _templating() -> g.Templating:
    return variables(
        extra=[
            g.Template(
                name=s.TASK,
                label="Task",
                query=s.task_names(),
                dataSource=POSTGRES,
                multi=True,
                includeAll=True,
                allValue=TASK_ALL_VALUE,
                refresh=g.REFRESH_ON_TIME_RANGE_CHANGE,
            ),
            # No custom all value: Grafana then inserts every option, quoted.
            g.Template(
                name=s.STATUS,
                label="Status",
                query=",".join(s.STATUSES),
                type="custom",
                multi=True,
                includeAll=True,
            ),
            textbox(s.ERROR, "Error message contains"),
            textbox(s.ATTEMPT, "Attempt id or task id"),
        ]
    )


def _health(cfg: Config) -> g.Table:
    return sql_table(
        "Task health",
        "Per task: attempts pending and running now (live rows of the log), and over the "
        "time range the successes, failures, mean duration of the successes and the "
        "success rate, from the per-minute and hourly rollups (never a scan of the log; "
        "the range is widened to whole minutes). Click a task for its detail.",
        s.task_health(),
        units={
            "pending": "none",
            "running": "none",
            "success": "none",
            "failed": "none",
            "avg_success_ms": "ms",
            "success_rate": "percentunit",
        },
        links={
            s.TASK: [
                links.task_detail(
                    "Task detail", task="${__value.raw:percentencode}", time=(links.TIME,)
                ),
                links.history(
                    "Failed attempts of this task",
                    task="${__value.raw:percentencode}",
                    status="failed",
                ),
            ]
        },
        cell_colors={"success_rate": success_steps(cfg)},
    )


def _executions() -> g.Table:
    return sql_table(
        "Executions",
        f"Attempts of the selected tasks and statuses in the time range, newest first, at "
        f"most {s.TABLE_LIMIT} (narrow the range or the filters for older ones), in "
        "pages (the table's pagination). The error box "
        "matches a part of the error message, case-insensitively; the attempt box an "
        "attempt id or a task id. Click an id for its params and traceback.",
        s.executions(),
        units={**UNITS, "started_at": "dateTimeAsIso", "created_at": "dateTimeAsIso"},
        links=ROW_LINKS,
        hidden=HIDDEN,
        page=True,
    )


def _live() -> g.Table:
    return sql_table(
        "Live activity",
        f"The {s.LIVE_LIMIT} attempts of the selected tasks whose status changed last "
        "(sent, started, finished), over the last 24 hours whatever the time range; "
        "the dashboard refreshes every 5 seconds.",
        s.live_activity(),
        units={**UNITS, "updated_at": "dateTimeAsIso"},
        links=ROW_LINKS,
        hidden=HIDDEN,
        time_from="24h",
    )


def build(cfg: Config) -> Board:
    rows = [
        ("Task health (rollups)", [Cell(_health(cfg), 24, 7)]),
        ("Attempts", [Cell(_executions(), 24, 16)]),
        ("Latest status changes", [Cell(_live(), 24, 10)]),
    ]
    return Board(
        dashboard(
            title="TaskIQ history",
            uid=HISTORY_UID,
            description="The TaskIQ execution log in PostgreSQL: per-task health, every "
            "attempt with task, status, error and id filters, and the latest status "
            "changes. Each attempt links to its params and traceback.",
            rows=rows,
            templating=_templating(),
            refresh="5s",
            since="now-3h",
        )
    )
