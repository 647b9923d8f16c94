"""Response models of the JSON API: the single source of its OpenAPI schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from exporter.store.models import TaskStatus


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)


class ErrorResponse(_Out):
    """Every error of the service: 400, 401, 404, 405 and 500."""

    error: str = Field(description="What went wrong; for a 400, the parameter and what is allowed")


class TaskMetrics(_Out):
    task_name: str
    total_executions: int = Field(ge=0, description="pending + running + success + failed")
    pending: int = Field(ge=0)
    running: int = Field(ge=0)
    success: int = Field(ge=0)
    failed: int = Field(ge=0)
    avg_duration_ms: float | None = Field(
        description="Mean duration of the successful runs (failed runs do not count)"
    )
    success_rate: float | None = Field(
        ge=0, le=1, description="success / (success + failed); null when nothing completed"
    )


class MonitoringMetricsResponse(_Out):
    time_window_hours: int = Field(ge=1, le=720)
    generated_at: datetime
    metrics: list[TaskMetrics] = Field(description="One entry per task name seen in the window")


class TaskExecutionLogResponse(_Out):
    """One attempt of a task, without its traceback (see has_traceback)."""

    id: int
    task_name: str
    status: TaskStatus
    task_id: str
    attempt: int
    params: Any = Field(description="The task's arguments as stored (secrets redacted)")
    queued_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: float | None
    queue_wait_ms: float | None
    error_message: str | None
    has_traceback: bool
    worker_host: str | None
    worker_pid: int | None
    created_at: datetime
    updated_at: datetime


class TaskExecutionLogDetail(TaskExecutionLogResponse):
    """One attempt with everything stored, the traceback included."""

    error_traceback: str | None


class TaskHistoryResponse(_Out):
    total_count: int = Field(ge=0, description="Exact number of rows matching the filters")
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


class ReadinessResponse(_Out):
    status: Literal["ready", "not ready"]
    database: bool = Field(description="The database answered")
    migrations: str = Field(description="at head, or what is wrong")
    current_revision: str | None
    head_revision: str | None


class TaskEventData(_Out):
    task_id: str
    attempt: int
    duration_ms: float | None
    error_message: str | None
    updated_at: str = Field(description="Resume cursor: reconnect with ?since=<this value>")


class TaskEventMessage(_Out):
    """A message of the /api/v1/monitoring/events WebSocket."""

    type: Literal["task_event", "replay_truncated"]
    task_name: str | None = None
    status: TaskStatus | None = None
    timestamp: str | None = None
    data: TaskEventData | None = None
