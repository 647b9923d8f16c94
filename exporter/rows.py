"""The execution log's row as every layer sees it: statuses, columns, merge rules.

The middleware builds rows, the stores write them, the service reads them back;
all three agree on this one module. In memory a row is a plain list in
:data:`COLUMNS` order: cheap to build on the task's path and already the JSON
shape the PostgreSQL writer sends. Code indexes it with the names below, never
with numbers, and builds it with :func:`log_row` only, so a new column is one
line here and one parameter of :func:`log_row`. Timestamps are epoch seconds,
converted when written.
"""

from __future__ import annotations

import enum
from typing import Any


class TaskStatus(str, enum.Enum):
    """Where a task attempt is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


PENDING = TaskStatus.PENDING.value
RUNNING = TaskStatus.RUNNING.value
SUCCESS = TaskStatus.SUCCESS.value
FAILED = TaskStatus.FAILED.value
TERMINAL = frozenset((SUCCESS, FAILED))
RANK = {PENDING: 0, RUNNING: 1, SUCCESS: 2, FAILED: 2}

# retried: a failed attempt that a retry middleware sent again (the summary counts
# a task's final outcome with it); None where that is not known.
COLUMNS = (
    "task_id",
    "attempt",
    "task_name",
    "status",
    "params",
    "queued_at",
    "started_at",
    "completed_at",
    "duration_ms",
    "queue_wait_ms",
    "error_message",
    "error_traceback",
    "worker_host",
    "worker_pid",
    "retried",
    "created_at",
)
(
    TASK_ID,
    ATTEMPT,
    TASK_NAME,
    STATUS,
    PARAMS,
    QUEUED_AT,
    STARTED_AT,
    COMPLETED_AT,
    DURATION_MS,
    QUEUE_WAIT_MS,
    ERROR_MESSAGE,
    ERROR_TRACEBACK,
    WORKER_HOST,
    WORKER_PID,
    RETRIED,
    CREATED_AT,
) = range(len(COLUMNS))
ROW_WIDTH = len(COLUMNS)
# Fields merged with "the newer value wins when it has one".
_MERGED = range(PARAMS, CREATED_AT)

LogRow = list[Any]
RowKey = tuple[str, int]


def log_row(
    task_id: str,
    attempt: int,
    task_name: str,
    status: str,
    *,
    params: str | None = None,
    queued_at: float | None = None,
    started_at: float | None = None,
    completed_at: float | None = None,
    duration_ms: float | None = None,
    queue_wait_ms: float | None = None,
    error_message: str | None = None,
    error_traceback: str | None = None,
    worker_host: str | None = None,
    worker_pid: int | None = None,
    retried: bool | None = None,
    created_at: float,
) -> LogRow:
    """A new row; what is not known yet stays None (the store keeps what it has)."""
    return [
        task_id,
        attempt,
        task_name,
        status,
        params,
        queued_at,
        started_at,
        completed_at,
        duration_ms,
        queue_wait_ms,
        error_message,
        error_traceback,
        worker_host,
        worker_pid,
        retried,
        created_at,
    ]


# The parameters must be the columns, in order: the list above follows them.
if log_row.__code__.co_varnames[:ROW_WIDTH] != COLUMNS:  # pragma: no cover
    raise RuntimeError("log_row's parameters must be exactly COLUMNS, in order")


def row_key(row: LogRow) -> RowKey:
    return (row[TASK_ID], row[ATTEMPT])


def advance(row: LogRow, status: str) -> None:
    """Move forward; a row never goes back, and a terminal status is final."""
    current = row[STATUS]
    if current not in TERMINAL and RANK[status] >= RANK[current]:
        row[STATUS] = status


def absorb(row: LogRow, newer: LogRow) -> None:
    """Fold a row that was buffered after ``row`` (same attempt) into it."""
    advance(row, newer[STATUS])
    for i in _MERGED:
        if newer[i] is not None:
            row[i] = newer[i]
    row[CREATED_AT] = min(row[CREATED_AT], newer[CREATED_AT])


def as_dict(row: LogRow) -> dict[str, Any]:
    return dict(zip(COLUMNS, row, strict=True))
