"""TaskIQ overview: every task at once, the alerts' view, backlog and the exporter's health."""

from __future__ import annotations

from dashboards import exporter_health, links, slo
from dashboards import promql as q
from dashboards import recording as rec
from dashboards.common import OVERVIEW_UID, Board, dashboard
from dashboards.config import Config
from dashboards.panels import Cell, Query, prometheus_table, stat, tile, timeseries
from dashboards.sections import (
    failure_ratio_panel,
    latency_panels,
    recent_executions,
    success_steps,
)
from exporter.metrics import names as n

FAILED = f'{n.LABEL_STATUS}="failed"'
SUCCESS = f'{n.LABEL_STATUS}="success"'
PENDING = f'{n.LABEL_STATUS}="pending"'
FIRING_ALERTS = "Firing TaskIQ alerts"
TASK = n.LABEL_TASK_NAME


def _health(cfg: Config) -> list[Cell]:
    pending_steps = (("green", None), ("orange", cfg.oldest_pending.seconds))
    return [
        tile(
            stat(
                "Completions per second",
                "Attempts finished per second, all selected tasks and statuses.",
                "ops",
                [Query(q.sum_rate(n.TASKS_COMPLETED))],
            )
        ),
        tile(
            stat(
                "Success ratio",
                "Successful share of the attempts that finished: success / (success + failed).",
                "percentunit",
                [Query(q.ratio(n.TASKS_COMPLETED, SUCCESS))],
                thresholds=success_steps(cfg),
                decimals=2,
            )
        ),
        tile(
            stat(
                "In progress",
                "Attempts running now in every live worker process.",
                "short",
                [Query(f"sum({q.selector(n.TASKS_IN_PROGRESS)})")],
            )
        ),
        tile(
            stat(
                "Pending (execution log)",
                "Rows of the execution log still pending: sent "
                "and not started. Read from PostgreSQL by the exporter at scrape time.",
                "short",
                [Query(f"max({q.selector(n.TASKS_BY_STATUS, PENDING)})")],
            )
        ),
        tile(
            stat(
                "Oldest pending task",
                "Age of the oldest pending row of the execution log; "
                "orange from the TaskiqQueueWaitHigh threshold.",
                "s",
                [Query(f"max({q.selector(n.OLDEST_PENDING_AGE)})")],
                thresholds=pending_steps,
            )
        ),
        tile(
            stat(
                "Log rows dropped",
                "Execution log rows dropped because the writer's buffer "
                "was full (lost history), per second.",
                "cps",
                [Query(q.sum_rate(n.LOG_ROWS_DROPPED))],
                thresholds=(("green", None), ("red", 0.000001)),
            )
        ),
    ]


def _throughput() -> list[Cell]:
    link = [links.series_task_detail()]
    return [
        Cell(
            timeseries(
                "Completions by task and status",
                "Attempts finished per second, by "
                "task and status. Click a series for the task's detail.",
                "ops",
                [
                    Query(
                        q.sum_rate(n.TASKS_COMPLETED, by=f"{TASK}, {n.LABEL_STATUS}"),
                        "{{task_name}} {{status}}",
                    )
                ],
                links=link,
            )
        ),
        Cell(
            timeseries(
                "Failures by task",
                "Failed attempts per second, by task.",
                "ops",
                [Query(q.sum_rate(n.TASKS_COMPLETED, FAILED, by=TASK), "{{task_name}}")],
                links=link,
            )
        ),
        Cell(
            timeseries(
                "Sent and started",
                "Tasks sent by clients and attempts started by "
                "workers, per second. Sent above started means the queue grows.",
                "ops",
                [
                    Query(q.sum_rate(n.TASKS_SENT), "sent"),
                    Query(q.sum_rate(n.TASKS_STARTED), "started"),
                ],
            )
        ),
        Cell(
            timeseries(
                "Retries by task",
                "Failed attempts that were retried, per second, by task.",
                "ops",
                [Query(q.sum_rate(n.TASK_RETRIES, by=TASK), "{{task_name}}")],
                links=link,
            )
        ),
    ]


def _ratios(cfg: Config) -> list[Cell]:
    return [
        Cell(
            timeseries(
                "Success ratio by task",
                "success / (success + failed) per task over "
                "the rate interval; gaps mean nothing finished.",
                "percentunit",
                [Query(q.ratio(n.TASKS_COMPLETED, SUCCESS, by=TASK), "{{task_name}}")],
                max_value=1,
                links=[links.series_task_detail()],
            )
        ),
        Cell(failure_ratio_panel(cfg)),
    ]


def _backlog() -> list[Cell]:
    return [
        Cell(
            timeseries(
                "In progress by task",
                "Attempts running now, by task (live worker processes only).",
                "short",
                [Query(f"sum by ({TASK}) ({q.selector(n.TASKS_IN_PROGRESS)})", "{{task_name}}")],
            ),
            8,
        ),
        Cell(
            timeseries(
                "Pending and running (execution log)",
                "Rows of the execution log by status, as the exporter reads them from PostgreSQL.",
                "short",
                [
                    Query(
                        f"max by ({n.LABEL_STATUS}) ({q.selector(n.TASKS_BY_STATUS)})", "{{status}}"
                    )
                ],
            ),
            8,
        ),
        Cell(
            timeseries(
                "In progress, fleet view",
                "In-progress attempts per task as the "
                "TaskiqTasksStuck alert sees them (recording rule).",
                "short",
                [Query(q.recorded(rec.IN_PROGRESS), "{{task_name}}")],
            ),
            8,
        ),
    ]


def build(cfg: Config) -> Board:
    firing = (
        f'sum by (alertname, severity, {TASK}, job) (ALERTS{{alertstate="firing", '
        f'alertname=~"Taskiq.*", job=~"$job"}})'
    )
    rows = [
        ("Health", _health(cfg)),
        ("Throughput", _throughput()),
        ("Success and failure", _ratios(cfg)),
        ("Error budgets (SLO file)", slo.overview_cells()),
        (
            "Latency",
            [Cell(panel) for panel in latency_panels(cfg)],
        ),
        ("Backlog", _backlog()),
        ("Exporter health", exporter_health.cells()),
        (
            "Recent failures (PostgreSQL)",
            [
                Cell(
                    prometheus_table(
                        FIRING_ALERTS,
                        "TaskIQ alerts firing now, from Prometheus; empty while all is well. "
                        "Click a task for its failed attempts in the history dashboard.",
                        [Query(firing)],
                        links={
                            TASK: [
                                links.history(
                                    "Failed attempts of this task",
                                    task="${__value.raw:percentencode}",
                                    status="failed",
                                )
                            ]
                        },
                    ),
                    24,
                    6,
                ),
                Cell(recent_executions("Recent failures", failed_only=True), 24, 10),
            ],
        ),
    ]
    return Board(
        dashboard(
            title="TaskIQ overview",
            uid=OVERVIEW_UID,
            description="Throughput, failures, latency and backlog of every TaskIQ task, "
            "the alerts' view, and the exporter's own health.",
            rows=rows,
        ),
        alert_only=frozenset({FIRING_ALERTS}),
    )
