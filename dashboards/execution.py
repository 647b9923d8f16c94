"""TaskIQ execution: one attempt (by its id, or the latest attempt of a task id)
with its params and traceback, and every attempt of its task id."""

from __future__ import annotations

from grafanalib import core as g

from dashboards import links
from dashboards import log_sql as s
from dashboards.common import EXECUTION_UID, Board, dashboard, textbox, variables
from dashboards.config import Config
from dashboards.panels import Cell, sql_table, sql_text

HIDDEN = (s.RANGE_FROM, s.RANGE_TO)
UNITS = {"duration_ms": "ms", "queue_wait_ms": "ms", "attempt": "none", "id": "none"}
WITHHELD = (
    "Empty for an attempt without one, and for every attempt when grants.sql withholds "
    "the details view from Grafana (reader_details=off)."
)


def _templating() -> g.Templating:
    return variables(extra=[textbox(s.ATTEMPT, "Attempt id or task id")])


def _attempt() -> g.Table:
    return sql_table(
        "Attempt",
        "The attempt the box names: its log id, or the latest attempt of a task id, "
        "created in the time range (links from other dashboards set both). Click the "
        "task for its detail dashboard at that time, the task id for its history.",
        s.attempt(),
        units={
            **UNITS,
            "worker_pid": "none",
            **{c: "dateTimeAsIso" for c in ("created_at", "queued_at", "started_at")},
            "completed_at": "dateTimeAsIso",
        },
        links={
            s.TASK: [
                links.task_detail("Task detail at that time", task="${__value.raw:percentencode}"),
                links.history(
                    "History of this task at that time",
                    task="${__value.raw:percentencode}",
                    time=links.ROW_TIME,
                ),
            ],
            "task_id": [
                links.history(
                    "Every attempt of this task id (history)",
                    task="${__data.fields.task_name:percentencode}",
                    attempt="${__value.raw:percentencode}",
                    time=links.ROW_TIME,
                ),
            ],
            "id": [links.api_link("Record and traceback (API)", "/history/${__value.raw}")],
        },
        hidden=HIDDEN,
    )


def _attempts() -> g.Table:
    return sql_table(
        "Attempts of this task id",
        f"Every attempt of the same task id in the time range (retries keep the task id), "
        f"newest first, at most {s.ATTEMPTS_LIMIT}. Click an id to show that attempt.",
        s.attempts_of_task(),
        units={**UNITS, "created_at": "dateTimeAsIso", "started_at": "dateTimeAsIso"},
        links={
            "id": [
                links.execution("Show this attempt"),
                links.api_link("Record and traceback (API)", "/history/${__value.raw}"),
            ],
        },
        hidden=HIDDEN,
    )


def build(cfg: Config) -> Board:
    rows = [
        ("The attempt", [Cell(_attempt(), 24, 5)]),
        (
            "Error",
            [
                Cell(
                    sql_text(
                        "Traceback",
                        "The attempt's traceback as the middleware stored it (redacted): "
                        f"monospace, wrapped. {WITHHELD}",
                        s.attempt_text("traceback", "error_traceback"),
                    ),
                    24,
                    16,
                ),
            ],
        ),
        (
            "Params and attempts",
            [
                Cell(
                    sql_text(
                        "Params",
                        "The attempt's arguments as stored, after the middleware's "
                        f"redaction (_redacted lists what it replaced). {WITHHELD}",
                        s.attempt_text("params", "jsonb_pretty(params)"),
                    ),
                    10,
                    10,
                ),
                Cell(_attempts(), 14, 10),
            ],
        ),
    ]
    return Board(
        dashboard(
            title="TaskIQ execution",
            uid=EXECUTION_UID,
            description="One TaskIQ attempt from the execution log: its fields, params "
            "and traceback, and every attempt of its task id. Open it from a row of the "
            "history, overview or task detail dashboards.",
            rows=rows,
            templating=_templating(),
            refresh="",
            since="now-7d",
        )
    )
