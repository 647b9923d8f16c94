"""TaskIQ task detail: one task (the task_name variable) in depth, with its recent executions."""

from __future__ import annotations

from dashboards import promql as q
from dashboards import slo
from dashboards.common import TASK_DETAIL_UID, Board, dashboard
from dashboards.config import Config
from dashboards.panels import Cell, Query, stat, tile, timeseries
from dashboards.sections import (
    failure_ratio_panel,
    latency_panels,
    recent_executions,
    success_steps,
)
from exporter.metrics import names as n

SUCCESS = f'{n.LABEL_STATUS}="success"'
STATUS = n.LABEL_STATUS


def _mean_duration() -> str:
    duration = n.TASK_DURATION
    return (
        f"sum by ({STATUS}) ({q.rate(f'{duration}_sum')})\n/\n"
        f"sum by ({STATUS}) ({q.rate(f'{duration}_count')})"
    )


def _stats(cfg: Config) -> list[Cell]:
    return [
        tile(
            stat(
                "Completions per second",
                "Attempts of the task finished per second.",
                "ops",
                [Query(q.sum_rate(n.TASKS_COMPLETED))],
            )
        ),
        tile(
            stat(
                "Success ratio",
                "success / (success + failed) over the rate interval.",
                "percentunit",
                [Query(q.ratio(n.TASKS_COMPLETED, SUCCESS))],
                thresholds=success_steps(cfg),
                decimals=2,
            )
        ),
        tile(
            stat(
                "Retries per second",
                "Failed attempts of the task that were retried.",
                "ops",
                [Query(q.sum_rate(n.TASK_RETRIES))],
            )
        ),
        tile(
            stat(
                "In progress",
                "Attempts of the task running now.",
                "short",
                [Query(f"sum({q.selector(n.TASKS_IN_PROGRESS)})")],
            )
        ),
        tile(
            stat(
                "Duration p95",
                "p95 wall time of an attempt over the rate interval.",
                "s",
                [Query(q.quantile(0.95, n.TASK_DURATION))],
                thresholds=(("green", None), ("orange", cfg.duration.threshold.default)),
            )
        ),
        tile(
            stat(
                "Queue wait p95",
                "p95 time from send to start over the rate interval.",
                "s",
                [Query(q.quantile(0.95, n.TASK_QUEUE_WAIT))],
                thresholds=(("green", None), ("orange", cfg.queue_wait.threshold.default)),
            )
        ),
    ]


def _flow() -> list[Cell]:
    return [
        Cell(
            timeseries(
                "Completions by status",
                "Attempts finished per second, by status.",
                "ops",
                [Query(q.sum_rate(n.TASKS_COMPLETED, by=STATUS), "{{status}}")],
            )
        ),
        Cell(
            timeseries(
                "Sent, started, completed and retried",
                "The task's life per second: "
                "sent by clients, started by workers, finished, retried.",
                "ops",
                [
                    Query(q.sum_rate(n.TASKS_SENT), "sent"),
                    Query(q.sum_rate(n.TASKS_STARTED), "started"),
                    Query(q.sum_rate(n.TASKS_COMPLETED), "completed"),
                    Query(q.sum_rate(n.TASK_RETRIES), "retried"),
                ],
            )
        ),
    ]


def build(cfg: Config) -> Board:
    rows = [
        ("Summary", _stats(cfg)),
        ("Throughput", _flow()),
        ("Error budget (SLO file)", slo.task_cells()),
        (
            "Failures",
            [
                Cell(failure_ratio_panel(cfg)),
                Cell(
                    timeseries(
                        "In progress by instance",
                        "Attempts running now, by exporter instance (one per worker host).",
                        "short",
                        [
                            Query(
                                f"sum by (instance) ({q.selector(n.TASKS_IN_PROGRESS)})",
                                "{{instance}}",
                            )
                        ],
                    )
                ),
            ],
        ),
        (
            "Latency",
            [
                *(Cell(panel, 8) for panel in latency_panels(cfg)),
                Cell(
                    timeseries(
                        "Mean duration by status",
                        "Mean wall time of an attempt, success "
                        "and failed apart: fast failures hide in a mean over both.",
                        "s",
                        [Query(_mean_duration(), "{{status}}")],
                    ),
                    8,
                ),
            ],
        ),
        (
            "Recent executions (PostgreSQL)",
            [
                Cell(recent_executions("Recent executions", failed_only=False), 24, 12),
            ],
        ),
    ]
    return Board(
        dashboard(
            title="TaskIQ task detail",
            uid=TASK_DETAIL_UID,
            description="One TaskIQ task in depth: throughput, failures as the alerts see "
            "them, latency percentiles and its most recent executions.",
            rows=rows,
        )
    )
