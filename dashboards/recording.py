"""Recording rules: the expressions the alerts and the dashboards share.

Names follow ``level:metric:operations``. Every rule aggregates ``without
(instance)`` so that target labels other than ``instance`` (job, and whatever a
deployment adds: cluster, env) survive; rates are taken before any sum so that
a counter reset in one worker host never shows up as a negative rate.
"""

from __future__ import annotations

from typing import Any

from dashboards.config import Config
from exporter.metrics import names as n

Rule = dict[str, Any]


def completed_by_status(window: str) -> str:
    return f"task_name_status:{n.TASKS_COMPLETED}:rate{window}"


def completed(window: str) -> str:
    return f"task_name:{n.TASKS_COMPLETED}:rate{window}"


def failed_ratio(window: str) -> str:
    return f"task_name:{n.NAMESPACE}_tasks_failed:ratio_rate{window}"


def buckets(histogram: str, window: str) -> str:
    return f"task_name_le:{histogram}_bucket:rate{window}"


def p95(histogram: str, window: str) -> str:
    return f"task_name:{histogram}:p95_rate{window}"


IN_PROGRESS = f"task_name:{n.TASKS_IN_PROGRESS}:sum"
OLDEST_PENDING = f"job:{n.OLDEST_PENDING_AGE}:max"


def _completion_rules(cfg: Config, window: str) -> list[Rule]:
    raw = f"{n.total(n.TASKS_COMPLETED)}{{{cfg.job_selector}}}"
    failed = f'{completed_by_status(window)}{{{n.LABEL_STATUS}="failed"}}'
    return [
        {
            "record": completed_by_status(window),
            "expr": f"sum without (instance) (rate({raw}[{window}]))",
        },
        {
            "record": completed(window),
            "expr": f"sum without ({n.LABEL_STATUS}) ({completed_by_status(window)})",
        },
        {
            # 0/0 (no completions in the window) is NaN: no ratio, so no alert.
            "record": failed_ratio(window),
            "expr": f"sum without ({n.LABEL_STATUS}) ({failed})\n/\n{completed(window)}",
        },
    ]


def _latency_rules(cfg: Config, histogram: str, window: str) -> list[Rule]:
    raw = f"{histogram}_bucket{{{cfg.job_selector}}}"
    # Duration is kept across statuses: a timeout that fails is as slow as a success.
    return [
        {
            "record": buckets(histogram, window),
            "expr": f"sum without (instance, {n.LABEL_STATUS}) (rate({raw}[{window}]))",
        },
        {
            "record": p95(histogram, window),
            "expr": f"histogram_quantile(0.95, {buckets(histogram, window)})",
        },
    ]


def recording_rules(cfg: Config) -> list[Rule]:
    """Every recording rule, in dependency order (a group evaluates in order)."""
    rules: list[Rule] = []
    for window in cfg.rate_windows():
        rules += _completion_rules(cfg, window)
    for histogram, window in sorted(
        {
            (n.TASK_DURATION, cfg.duration.window),
            (n.TASK_DURATION, cfg.dashboard_window),
            (n.TASK_QUEUE_WAIT, cfg.queue_wait.window),
            (n.TASK_QUEUE_WAIT, cfg.dashboard_window),
        }
    ):
        rules += _latency_rules(cfg, histogram, window)
    rules.append(
        {
            "record": IN_PROGRESS,
            "expr": f"sum without (instance) ({n.TASKS_IN_PROGRESS}{{{cfg.job_selector}}})",
        }
    )
    # Every exporter of a job reads the same store: the max, not the sum.
    rules.append(
        {
            "record": OLDEST_PENDING,
            "expr": f"max without (instance) ({n.OLDEST_PENDING_AGE}{{{cfg.job_selector}}})",
        }
    )
    return rules


def recorded_names(cfg: Config) -> frozenset[str]:
    return frozenset(rule["record"] for rule in recording_rules(cfg))
