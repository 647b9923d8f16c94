"""Response models of the JSON API: the single source of its OpenAPI schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from exporter.rows import TaskStatus


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)


class ErrorResponse(_Out):
    """Every error of the service: 400, 401, 404, 405, 500 and 503."""

    error: str = Field(description="What went wrong; for a 400, the parameter and what is allowed")


class MetricsTotals(_Out):
    """Counts over the window, all task names together (each TaskMetrics has the same
    fields for one name). Per attempt: every attempt of a retried task counts. Per
    task: only a task_id's final attempt counts, the one that decided its outcome."""

    total_executions: int = Field(
        ge=0, description="Attempts created in the window: pending + running + success + failed"
    )
    pending: int = Field(ge=0, description="Attempts created in the window, still pending")
    running: int = Field(ge=0, description="Attempts created in the window, still running")
    success: int = Field(ge=0, description="Attempts created in the window that succeeded")
    failed: int = Field(
        ge=0, description="Attempts created in the window that failed, retried ones included"
    )
    avg_duration_ms: float | None = Field(
        description="Mean duration of the successful attempts in milliseconds (failed ones "
        "do not count); null when none succeeded"
    )
    success_rate: float | None = Field(
        ge=0,
        le=1,
        description="Per attempt: success / (success + failed); null when no attempt finished",
    )
    tasks_succeeded: int = Field(
        ge=0,
        description="Tasks (task_ids) whose final attempt, created in the window, succeeded",
    )
    tasks_failed: int = Field(
        ge=0,
        description="Tasks (task_ids) whose final attempt, created in the window, failed: "
        "failed attempts that no later attempt of the same task_id followed",
    )
    outcome_success_rate: float | None = Field(
        ge=0,
        le=1,
        description="Per task, the final attempt decides: tasks_succeeded / (tasks_succeeded "
        "+ tasks_failed); null when no task finished",
    )


class _Named(_Out):
    task_name: str


# pydantic takes the fields of the last base first: task_name leads in the JSON.
class TaskMetrics(MetricsTotals, _Named):
    """The counts of one task name."""


class MonitoringMetricsResponse(_Out):
    time_window_hours: int = Field(ge=1, le=720)
    generated_at: datetime
    overall: MetricsTotals = Field(description="Every task name of the window together")
    metrics: list[TaskMetrics] = Field(description="One entry per task name seen in the window")


class TaskExecutionLogResponse(_Out):
    """One attempt of a task, without its traceback (see has_traceback)."""

    id: int
    task_name: str
    status: TaskStatus
    task_id: str
    attempt: int
    params: Any = Field(
        description=(
            "The task's arguments as stored: {args, kwargs}, secrets replaced by '***'; "
            "when anything was masked, _redacted lists the masked paths (never the values)"
        )
    )
    queued_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: float | None
    queue_wait_ms: float | None
    error_message: str | None
    has_traceback: bool
    worker_host: str | None
    worker_pid: int | None
    retried: bool | None = Field(
        description="For a failed attempt: true when a retry middleware sent the task "
        "again (so this attempt did not decide its outcome), false when it did not; "
        "null for other statuses and for rows written before this was recorded"
    )
    created_at: datetime
    updated_at: datetime


class TaskExecutionLogDetail(TaskExecutionLogResponse):
    """One attempt with everything stored, the traceback included."""

    error_traceback: str | None


class TaskHistoryResponse(_Out):
    total_count: int = Field(
        ge=0,
        description="Number of rows matching the filters: exact, unless total_count_exact "
        "is false (a search matching more than 10000 rows: it is then 10000)",
    )
    total_count_exact: bool = Field(
        description="false only for a search (error, param.<key>) that matches more than "
        "10000 rows: total_count and total_pages then stop there, and pages past it are "
        "read by cursor"
    )
    page: int | None = Field(description="The page number; null when walking with a cursor")
    page_size: int = Field(ge=1, le=200)
    total_pages: int = Field(ge=0)
    next_cursor: str | None = Field(
        description="Pass as cursor= for the next (older) page; null on the last page"
    )
    items: list[TaskExecutionLogResponse]


class TaskAttemptsResponse(_Out):
    task_id: str
    attempts: list[TaskExecutionLogDetail] = Field(description="Every attempt, newest first")


class TaskNamesResponse(_Out):
    task_names: list[str]


class HealthResponse(_Out):
    status: Literal["ok"]
    version: str = Field(description="The taskiq-exporter version serving this")


class ReplicaReadiness(_Out):
    """The read replica (TASKIQ_EXPORTER_READ_DATABASE_URL): whether it answers and
    how far behind the primary it is. It does not decide readiness: while it is down,
    the API reads from the primary."""

    reachable: bool = Field(description="The replica answered")
    caught_up: bool | None = Field(
        description="It had replayed all the WAL the primary had written when checked; "
        "null when not measured"
    )
    lag_seconds: float | None = Field(
        description="Upper bound on how long ago the oldest commit it does not show yet was "
        "made on the primary: 0 when caught up; null when not measured"
    )
    detail: str = Field(description="caught up, how far behind, or why it does not answer")


class ReadinessResponse(_Out):
    status: Literal["ready", "not ready"]
    database: bool = Field(description="The database (the primary) answered")
    migrations: str = Field(description="at head, or what is wrong")
    current_revision: str | None
    head_revision: str | None
    reads_from: Literal["primary", "replica"] | None = Field(
        None, description="Where the API's reads go now; only with a read replica configured"
    )
    replica: ReplicaReadiness | None = Field(
        None, description="The read replica; only with one configured"
    )


class TaskEventData(_Out):
    task_id: str
    attempt: int
    duration_ms: float | None
    error_message: str | None
    updated_at: str = Field(description="Resume cursor: reconnect with ?since=<this value>")


class TaskEventMessage(_Out):
    """A message of the /api/v1/monitoring/events WebSocket."""

    type: Literal["task_event", "replay_clamped", "replay_truncated", "events_dropped"]
    task_name: str | None = None
    status: TaskStatus | None = None
    timestamp: str | None = None
    data: TaskEventData | None = None
    # replay_clamped: where the replay starts (since) instead of where it was asked to
    # (requested); replay_truncated and events_dropped: reconnect with since=resume_from.
    since: str | None = None
    requested: str | None = None
    resume_from: str | None = None
    dropped: int | None = Field(None, ge=1, description="events_dropped: how many")
