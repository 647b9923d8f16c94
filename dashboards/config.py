"""Every threshold, window and name the dashboards and the alert rules share.

This is the one place to change an alert threshold: ``python -m dashboards``
regenerates the rules file and the dashboards (whose threshold lines follow),
and the promtool unit tests in ``prometheus/tests/`` then say whether the
scenarios written against the defaults still hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter import resources

Severity = str  # "critical" pages, "warning" opens a ticket, "info" is for dashboards


def _no_overrides() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True)
class TaskThreshold:
    """A limit that applies to every task unless ``per_task`` names it."""

    default: float
    per_task: Mapping[str, float] = field(default_factory=_no_overrides)


@dataclass(frozen=True)
class FailureRateAlert:
    """Fires when a task's failed share of completions over ``window`` is above
    ``threshold`` while at least ``min_completions`` finished in that window."""

    severity: Severity
    threshold: TaskThreshold
    window: str
    min_completions: int
    for_: str


@dataclass(frozen=True)
class LatencyAlert:
    """Fires when the p95 of a histogram over ``window`` stays above ``threshold``."""

    severity: Severity
    threshold: TaskThreshold
    window: str
    for_: str


@dataclass(frozen=True)
class StuckAlert:
    """Fires when a task has attempts in progress and none completed in ``window``."""

    severity: Severity
    window: str
    for_: str


@dataclass(frozen=True)
class OldestPendingAlert:
    """Fires when the oldest pending row of the execution log is older than ``seconds``."""

    severity: Severity
    seconds: float
    for_: str


@dataclass(frozen=True)
class ExporterDownAlert:
    severity: Severity
    for_: str


@dataclass(frozen=True)
class LogPersistenceAlert:
    """Rows dropped (lost history) fire after ``dropped_for``; write errors
    (retried by the writer) only when they go on for ``errors_for``."""

    severity: Severity
    window: str
    dropped_for: str
    errors_for: str


@dataclass(frozen=True)
class Config:
    """The monitoring mixin's configuration; ``DEFAULT`` is what is checked in."""

    # The Prometheus scrape job of the exporter service (prometheus.yml).
    job: str = resources.DEFAULT_JOB
    # The window of the recording rules the dashboards show next to the alerts.
    dashboard_window: str = "5m"
    # The runbook the exporter service serves from the package (GET /runbook); with
    # the service elsewhere, `taskiq-exporter rules export --runbook-url` sets it.
    runbook_url: str = resources.DEFAULT_RUNBOOK_URL
    # Where the alerts' dashboard_url annotations point: the Grafana that loads the
    # dashboards (docker compose publishes it on 127.0.0.1:3000).
    grafana_url: str = "http://127.0.0.1:3000"
    failure_rate_warning: FailureRateAlert = FailureRateAlert(
        severity="warning",
        threshold=TaskThreshold(0.05),
        window="30m",
        min_completions=20,
        for_="15m",
    )
    failure_rate_critical: FailureRateAlert = FailureRateAlert(
        severity="critical",
        threshold=TaskThreshold(0.25),
        window="5m",
        min_completions=10,
        for_="5m",
    )
    duration: LatencyAlert = LatencyAlert(
        severity="warning", threshold=TaskThreshold(300.0), window="5m", for_="15m"
    )
    queue_wait: LatencyAlert = LatencyAlert(
        severity="warning", threshold=TaskThreshold(60.0), window="5m", for_="10m"
    )
    oldest_pending: OldestPendingAlert = OldestPendingAlert(
        severity="warning", seconds=900.0, for_="5m"
    )
    stuck: StuckAlert = StuckAlert(severity="warning", window="30m", for_="15m")
    exporter_down: ExporterDownAlert = ExporterDownAlert(severity="critical", for_="5m")
    log_persistence: LogPersistenceAlert = LogPersistenceAlert(
        severity="warning", window="5m", dropped_for="5m", errors_for="15m"
    )

    @property
    def job_selector(self) -> str:
        return f'job="{self.job}"'

    def rate_windows(self) -> tuple[str, ...]:
        """Every window a recording rule is kept for, shortest first."""
        windows = {
            self.dashboard_window,
            self.failure_rate_warning.window,
            self.failure_rate_critical.window,
            self.duration.window,
            self.queue_wait.window,
            self.stuck.window,
        }
        return tuple(sorted(windows, key=seconds))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> int:
    """Seconds in a simple Prometheus duration such as ``30m``."""
    value, unit = duration[:-1], duration[-1]
    if unit not in _UNITS or not value.isdigit():
        raise ValueError(f"unsupported duration {duration!r}: use <int>s|m|h|d")
    return int(value) * _UNITS[unit]


DEFAULT = Config()
