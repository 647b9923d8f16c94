"""Alerting rules. Their names are a contract: runbook sections, Alertmanager
routes and the promtool tests refer to them."""

from __future__ import annotations

from typing import Any

from dashboards import recording as rec
from dashboards.common import HISTORY_UID, OVERVIEW_UID
from dashboards.config import Config, FailureRateAlert, LatencyAlert, TaskThreshold, seconds
from dashboards.promql import regex_escape
from exporter.metrics import names as n
from exporter.slo.links import TASK_PARAM, alert_url, last
from exporter.slo.model import HISTOGRAM, Kind
from exporter.slo.recording import OBJECTIVE, SLO

Rule = dict[str, Any]

FAILURE_RATE_HIGH = "TaskiqTaskFailureRateHigh"
FAILURE_RATE_CRITICAL = "TaskiqTaskFailureRateCritical"
DURATION_HIGH = "TaskiqTaskDurationHigh"
QUEUE_WAIT_HIGH = "TaskiqQueueWaitHigh"
TASKS_STUCK = "TaskiqTasksStuck"
EXPORTER_DOWN = "TaskiqExporterDown"
LOG_PERSISTENCE_FAILING = "TaskiqLogPersistenceFailing"
ALERT_NAMES = (
    FAILURE_RATE_HIGH,
    FAILURE_RATE_CRITICAL,
    DURATION_HIGH,
    QUEUE_WAIT_HIGH,
    TASKS_STUCK,
    EXPORTER_DOWN,
    LOG_PERSISTENCE_FAILING,
)


def history_url(cfg: Config, *durations: str, status: str | None, task: bool = True) -> str:
    """The alert's dashboard_url: the history dashboard for its task (or every
    task), the status it is about, over its window and its for duration."""
    params = [TASK_PARAM] if task else []
    if status is not None:
        params.append(f"var-status={status}")
    since = last(sum(seconds(d) for d in durations))
    return alert_url(cfg.grafana_url, HISTORY_UID, *params, *since)


def above(series: str, threshold: TaskThreshold) -> str:
    """``series > limit`` with the limit of each task: one branch per override,
    and the default for every task no override names."""
    if not threshold.per_task:
        return f"{series} > {threshold.default:g}"
    named = "|".join(regex_escape(task) for task in sorted(threshold.per_task))
    branches = [f'{series}{{{n.LABEL_TASK_NAME}!~"{named}"}} > {threshold.default:g}']
    for task, limit in sorted(threshold.per_task.items()):
        branches.append(f'{series}{{{n.LABEL_TASK_NAME}=~"{regex_escape(task)}"}} > {limit:g}')
    return "(\n  " + "\nor\n  ".join(branches) + "\n)"


def _without_slo(expr: str, kind: Kind) -> str:
    """``expr`` for the tasks no SLO file gives a ``kind`` objective: theirs is
    watched by the burn-rate alerts of ``taskiq-slo.rules.yml`` (without that
    file the objective series does not exist and every task is kept)."""
    return f'{expr}\nunless on (job, {n.LABEL_TASK_NAME})\n{OBJECTIVE}{{{SLO}="{kind}"}}'


def _alert(
    cfg: Config,
    name: str,
    severity: str,
    expr: str,
    for_: str,
    summary: str,
    description: str,
    *,
    dashboard: str,
    **labels: str,
) -> Rule:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **labels},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{cfg.runbook_url}#{name.lower()}",
            "dashboard_url": dashboard,
        },
    }


def _failure_rate(cfg: Config, name: str, a: FailureRateAlert) -> Rule:
    volume = f"{rec.completed(a.window)} * {seconds(a.window)} >= {a.min_completions}"
    return _alert(
        cfg,
        name,
        a.severity,
        _without_slo(f"{above(rec.failed_ratio(a.window), a.threshold)}\nand\n{volume}", "success"),
        a.for_,
        "A task fails more often than its threshold allows.",
        f"{{{{ $labels.task_name }}}} (job {{{{ $labels.job }}}}) failed "
        f"{{{{ $value | humanizePercentage }}}} of its attempts over the last {a.window} "
        f"(threshold {a.threshold.default:.0%} unless overridden, "
        f"at least {a.min_completions} completions).",
        dashboard=history_url(cfg, a.window, a.for_, status="failed"),
    )


def _latency(cfg: Config, name: str, kind: Kind, a: LatencyAlert, what: str) -> Rule:
    histogram = HISTOGRAM[kind]
    return _alert(
        cfg,
        name,
        a.severity,
        _without_slo(above(rec.p95(histogram, a.window), a.threshold), kind),
        a.for_,
        f"The p95 {what} of a task is above its threshold.",
        f"p95 {what} of {{{{ $labels.task_name }}}} (job {{{{ $labels.job }}}}) is "
        f"{{{{ $value | humanizeDuration }}}} over the last {a.window} "
        f"(threshold {a.threshold.default:g}s unless overridden).",
        dashboard=history_url(cfg, a.window, a.for_, status=None),
        cause=f"p95_{what.replace(' ', '_')}",
    )


def alerting_rules(cfg: Config) -> list[Rule]:
    stuck, down, log = cfg.stuck, cfg.exporter_down, cfg.log_persistence
    up = f"up{{{cfg.job_selector}}}"
    dropped = f"rate({n.total(n.LOG_ROWS_DROPPED)}{{{cfg.job_selector}}}[{log.window}]) > 0"
    errors = f"rate({n.total(n.LOG_WRITE_ERRORS)}{{{cfg.job_selector}}}[{log.window}]) > 0"
    return [
        _failure_rate(cfg, FAILURE_RATE_HIGH, cfg.failure_rate_warning),
        _failure_rate(cfg, FAILURE_RATE_CRITICAL, cfg.failure_rate_critical),
        _latency(cfg, DURATION_HIGH, "latency", cfg.duration, "duration"),
        _latency(cfg, QUEUE_WAIT_HIGH, "queue_wait", cfg.queue_wait, "queue wait"),
        # Histograms only see tasks that start: when nothing starts at all, the
        # execution log's oldest pending row is what shows the wait.
        _alert(
            cfg,
            QUEUE_WAIT_HIGH,
            cfg.oldest_pending.severity,
            f"{rec.OLDEST_PENDING} > {cfg.oldest_pending.seconds:g}",
            cfg.oldest_pending.for_,
            "Tasks wait too long before a worker starts them.",
            "The oldest pending task of job {{ $labels.job }} has waited "
            "{{ $value | humanizeDuration }} for a worker "
            f"(threshold {cfg.oldest_pending.seconds:g}s).",
            dashboard=history_url(
                cfg,
                f"{cfg.oldest_pending.seconds:g}s",
                cfg.oldest_pending.for_,
                status="pending",
                task=False,
            ),
            cause="oldest_pending",
        ),
        _alert(
            cfg,
            TASKS_STUCK,
            stuck.severity,
            f"{rec.IN_PROGRESS} > 0\nand\n{rec.completed(stuck.window)} == 0",
            stuck.for_,
            "Tasks are in progress but none has completed for a long time.",
            "{{ $value }} attempts of {{ $labels.task_name }} (job {{ $labels.job }}) are "
            f"in progress and none completed in the last {stuck.window}.",
            # A stuck attempt may have been sent long before the alert's window.
            dashboard=history_url(cfg, "1d", status="running"),
        ),
        _alert(
            cfg,
            EXPORTER_DOWN,
            down.severity,
            f"{up} == 0\nor\nabsent({up})",
            down.for_,
            "Prometheus cannot scrape the TaskIQ exporter.",
            "{{ if $labels.instance }}Target {{ $labels.instance }} of job {{ $labels.job }} "
            "is down{{ else }}No target of job {{ $labels.job }} is discovered{{ end }}: "
            "TaskIQ metrics and task alerts are blind.",
            dashboard=alert_url(cfg.grafana_url, OVERVIEW_UID, "from=now-1h", "to=now"),
        ),
        _alert(
            cfg,
            LOG_PERSISTENCE_FAILING,
            log.severity,
            dropped,
            log.dropped_for,
            "The execution log is losing rows.",
            '{{ $labels.instance }} dropped {{ $value | printf "%.2f" }} execution log rows/s '
            f"over the last {log.window}: the buffer is full and history is being lost.",
            dashboard=alert_url(cfg.grafana_url, OVERVIEW_UID, "from=now-1h", "to=now"),
            cause="rows_dropped",
        ),
        _alert(
            cfg,
            LOG_PERSISTENCE_FAILING,
            log.severity,
            errors,
            log.errors_for,
            "The execution log cannot be written.",
            "{{ $labels.instance }} keeps failing to write execution log batches "
            f'({{{{ $value | printf "%.2f" }}}}/s over the last {log.window}, '
            f"for {log.errors_for}).",
            dashboard=alert_url(cfg.grafana_url, OVERVIEW_UID, "from=now-1h", "to=now"),
            cause="write_errors",
        ),
    ]


def rules_document(cfg: Config) -> dict[str, Any]:
    return {
        "groups": [
            {"name": "taskiq.recording", "rules": rec.recording_rules(cfg)},
            {"name": "taskiq.alerts", "rules": alerting_rules(cfg)},
        ]
    }
