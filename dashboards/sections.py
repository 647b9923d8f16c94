"""Panels both dashboards show the same way: the alerts' view of failures and
latency, and the recent executions read from PostgreSQL."""

from __future__ import annotations

from grafanalib import core as g

from dashboards import links
from dashboards import promql as q
from dashboards import recording as rec
from dashboards.config import Config, LatencyAlert
from dashboards.log_sql import RANGE_COLUMNS, RANGE_FROM, RANGE_TO, task_filter
from dashboards.panels import Query, Steps, sql_table, timeseries
from dashboards.sql import LOG_VIEW
from exporter.metrics import names as n

TASK = n.LABEL_TASK_NAME


def success_steps(cfg: Config) -> Steps:
    """Red below the critical failure share, orange below the warning one."""
    return (
        ("red", None),
        ("orange", 1 - cfg.failure_rate_critical.threshold.default),
        ("green", 1 - cfg.failure_rate_warning.threshold.default),
    )


def failure_ratio_panel(cfg: Config) -> g.TimeSeries:
    warn, crit = cfg.failure_rate_warning, cfg.failure_rate_critical
    return timeseries(
        "Failure ratio as the alerts see it",
        f"Failed share of completions from the recording rules the alerts use: over "
        f"{crit.window} (TaskiqTaskFailureRateCritical, above {crit.threshold.default:.0%} "
        f"with {crit.min_completions}+ completions) and over {warn.window} "
        f"(TaskiqTaskFailureRateHigh, above {warn.threshold.default:.0%} with "
        f"{warn.min_completions}+ completions).",
        "percentunit",
        [
            Query(q.recorded(rec.failed_ratio(crit.window)), f"{{{{task_name}}}} {crit.window}"),
            Query(q.recorded(rec.failed_ratio(warn.window)), f"{{{{task_name}}}} {warn.window}"),
        ],
        thresholds=(
            ("green", None),
            ("orange", warn.threshold.default),
            ("red", crit.threshold.default),
        ),
        max_value=1,
    )


def latency_panel(title: str, histogram: str, alert: LatencyAlert, what: str) -> g.TimeSeries:
    return timeseries(
        title,
        f"{what} Percentiles per task from the histogram over the rate interval; the "
        f"dashed line is the p95 alert threshold ({alert.threshold.default:g}s).",
        "s",
        [
            Query(q.quantile(quantile, histogram, by=TASK), f"{{{{task_name}}}} p{label}")
            for quantile, label in ((0.5, "50"), (0.95, "95"), (0.99, "99"))
        ],
        thresholds=(("green", None), ("orange", alert.threshold.default)),
    )


def latency_panels(cfg: Config) -> tuple[g.TimeSeries, g.TimeSeries]:
    """Duration and queue-wait percentiles, with their alerts' thresholds."""
    return (
        latency_panel(
            "Duration p50 / p95 / p99",
            n.TASK_DURATION,
            cfg.duration,
            "Wall time of an attempt in the worker.",
        ),
        latency_panel(
            "Queue wait p50 / p95 / p99",
            n.TASK_QUEUE_WAIT,
            cfg.queue_wait,
            "Time from send to the start of an attempt.",
        ),
    )


def recent_executions(title: str, *, failed_only: bool) -> g.Table:
    status = "\n  AND status = 'failed'" if failed_only else ""
    # The shape PostgreSQL answers from an index in milliseconds at 10M rows:
    # a created_at range, ORDER BY created_at DESC, LIMIT. The reader's view of
    # the log has neither params nor tracebacks (grants.sql).
    sql = (
        'SELECT\n  id,\n  created_at AS "time",\n  task_name,\n  status,\n  attempt,\n'
        "  task_id,\n  duration_ms,\n  queue_wait_ms,\n  worker_host,\n  error_message,\n"
        f"{RANGE_COLUMNS}\n"
        f"FROM {LOG_VIEW}\n"
        "WHERE $__timeFilter(created_at)\n"
        f"  AND {task_filter()}"
        f"{status}\n"
        "ORDER BY created_at DESC\n"
        "LIMIT 50"
    )
    what = "failed attempts" if failed_only else "attempts"
    task = "${__value.raw:percentencode}"
    return sql_table(
        title,
        f"The 50 most recent {what} of the selected tasks in the time range, from the "
        "execution log in PostgreSQL. Click an id for the attempt with its params and "
        "traceback (TaskIQ execution dashboard), a task for its history; the same "
        "records in the exporter's API are the second links (with an API token set, "
        "open them with curl -H 'Authorization: Bearer ...').",
        sql,
        units={"duration_ms": "ms", "queue_wait_ms": "ms", "attempt": "none", "id": "none"},
        links={
            "id": [
                links.execution("Attempt, params and traceback"),
                links.api_link("Record and traceback (API)", "/history/${__value.raw}"),
            ],
            TASK: [
                links.history(
                    "History of this task" + (" (failed)" if failed_only else ""),
                    task=task,
                    status="failed" if failed_only else None,
                ),
                links.api_link(
                    "Failed attempts of this task (API)",
                    f"/history?task_name={task}&status=failed&page_size=20",
                ),
            ],
        },
        hidden=(RANGE_FROM, RANGE_TO),
    )
