"""The burn-rate alerts of every objective, and the rules file that holds them.

Their names are a contract, as those of ``taskiq.rules.yml``: runbook sections,
Alertmanager routes and the promtool tests refer to them.
"""

from __future__ import annotations

from typing import Any

from exporter.resources import DEFAULT_GRAFANA_URL
from exporter.slo.budget import view_rules
from exporter.slo.links import HISTORY_UID, TASK_DETAIL_UID, TASK_PARAM, alert_url, last
from exporter.slo.model import KINDS, Kind, SloFile, TaskSlo
from exporter.slo.recording import (
    BUDGET_REMAINING,
    OBJECTIVE,
    SLO,
    Rule,
    error_ratio,
    errors,
    matchers,
    owners,
    quoted,
    sli_rules,
)
from exporter.slo.windows import BurnWindow, Profile

SUCCESS_BURN = "TaskiqTaskSuccessBudgetBurn"
LATENCY_BURN = "TaskiqTaskLatencyBudgetBurn"
QUEUE_WAIT_BURN = "TaskiqTaskQueueWaitBudgetBurn"
ALERT_NAMES: dict[Kind, str] = {
    "success": SUCCESS_BURN,
    "latency": LATENCY_BURN,
    "queue_wait": QUEUE_WAIT_BURN,
}
_WHAT: dict[Kind, str] = {"success": "success", "latency": "latency", "queue_wait": "queue wait"}


_PROMISE: dict[Kind, str] = {
    "success": "of its tasks succeed",
    "latency": 'of its attempts finish within {{ $o | label "threshold_seconds" }}s',
    "queue_wait": 'of its attempts start within {{ $o | label "threshold_seconds" }}s',
}


def _lookup(record: str, kind: Kind) -> str:
    """A template pipeline querying ``record`` of the alert's task."""
    series = f"{record}{{{SLO}={quoted(kind)},job=%q,task_name=%q}}"
    return f"printf {quoted(series)} $labels.job $labels.task_name | query"


def _description(kind: Kind) -> str:
    # One rule serves every entry of a kind, so the objective is read back from
    # the series the SLO file recorded for the task.
    return (
        f"{{{{ $labels.task_name }}}} (job {{{{ $labels.job }}}}) burns its {_WHAT[kind]} "
        'error budget {{ $value | printf "%.1f" }}x as fast as its objective allows'
        f"{{{{ with {_lookup(OBJECTIVE, kind)} }}}}{{{{ $o := first . }}}} "
        f"({{{{ $o | value | humanizePercentage }}}} {_PROMISE[kind]} over "
        '{{ $o | label "window" }}){{ end }}; '
        f"{{{{ with {_lookup(BUDGET_REMAINING, kind)} }}}}"
        "{{ . | first | value | humanizePercentage }}{{ else }}an unknown share{{ end }} "
        "of the budget is left."
    )


def _limit(burn: BurnWindow, entry: TaskSlo, kind: Kind) -> float:
    # With a loose objective (budget > 1/factor) even a total outage burns slower
    # than the factor: the alert then fires when (nearly) every event is bad.
    budget = 1 - entry.objective(kind)
    return min(burn.factor(entry.window), round(0.999 / budget, 6))


def _condition(cfg: SloFile, profile: Profile, entry: TaskSlo, kind: Kind, burn: BurnWindow) -> str:
    where = ", ".join([f'{SLO}="{kind}"', *matchers(cfg, entry)])
    budget, limit = f"{1 - entry.objective(kind):.6g}", f"{_limit(burn, entry, kind):g}"
    # The low-traffic guard: at least min_errors bad events in the long window
    # (rate * seconds is an extrapolated count: half an event of slack).
    least = entry.min_errors - 0.5
    return (
        f"  {error_ratio(burn.long)}{{{where}}} / {budget} > {limit}\n"
        f"  and\n  {error_ratio(burn.short)}{{{where}}} / {budget} > {limit}\n"
        f"  and\n  {errors(burn.long)}{{{where}}} * {profile.seconds(burn.long)} >= {least:g}"
    )


def _dashboard_url(grafana_url: str, profile: Profile, kind: Kind, burns: list[BurnWindow]) -> str:
    """Where the alert opens: the task's failed attempts in the history for the
    success objective; the task detail dashboard, with its percentiles and burn
    rates, for latency and queue wait. Over the severity's longest window (its
    ``for`` is minutes beside hours)."""
    since = last(max(profile.seconds(b.long) for b in burns))
    if kind == "success":
        return alert_url(grafana_url, HISTORY_UID, TASK_PARAM, "var-status=failed", *since)
    return alert_url(grafana_url, TASK_DETAIL_UID, TASK_PARAM, *since)


def _alert(
    cfg: SloFile, profile: Profile, kind: Kind, severity: str, *, runbook_url: str, grafana_url: str
) -> Rule:
    burns = [b for b in profile.burn_windows if b.severity == severity]
    expr = "\nor\n".join(
        f"(\n{_condition(cfg, profile, entry, kind, b)}\n)"
        for entry in owners(cfg, kind)
        for b in burns
    )
    name = ALERT_NAMES[kind]
    return {
        "alert": name,
        "expr": expr,
        "for": profile.for_severity(severity),
        "labels": {"severity": severity, SLO: kind},
        "annotations": {
            "summary": f"A task burns its {_WHAT[kind]} error budget too fast.",
            "description": _description(kind),
            "runbook_url": f"{runbook_url}#{name.lower()}",
            "dashboard_url": _dashboard_url(grafana_url, profile, kind, burns),
        },
    }


def alerting_rules(
    cfg: SloFile, profile: Profile, runbook_url: str, grafana_url: str = DEFAULT_GRAFANA_URL
) -> list[Rule]:
    return [
        _alert(cfg, profile, kind, severity, runbook_url=runbook_url, grafana_url=grafana_url)
        for kind in KINDS
        if owners(cfg, kind)
        for severity in ("critical", "warning")
    ]


def rules_document(
    cfg: SloFile,
    *,
    job: str,
    runbook_url: str,
    grafana_url: str = DEFAULT_GRAFANA_URL,
    profile: Profile | None = None,
) -> dict[str, Any]:
    """The SLO rules file: SLIs, the views of the dashboards and the alerts."""
    profile = profile or Profile()
    return {
        "groups": [
            {
                "name": "taskiq.slo.recording",
                "rules": [*sli_rules(cfg, profile, job), *view_rules(cfg, profile)],
            },
            {
                "name": "taskiq.slo.alerts",
                "rules": alerting_rules(cfg, profile, runbook_url, grafana_url),
            },
        ]
    }
