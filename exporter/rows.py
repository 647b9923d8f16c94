"""The in-memory form of a log row between a hook and the writer.

A row is a plain list: the cheapest thing to build on the task's path (a
class with sixteen attributes cost ~1.5 us per task) and already the JSON
shape the PostgreSQL writer sends. Positions are named below; timestamps are
epoch seconds, converted when written.
"""

from __future__ import annotations

from typing import Any

from exporter.store.models import TaskStatus

PENDING = TaskStatus.PENDING.value
RUNNING = TaskStatus.RUNNING.value
SUCCESS = TaskStatus.SUCCESS.value
FAILED = TaskStatus.FAILED.value
TERMINAL = frozenset((SUCCESS, FAILED))
RANK = {PENDING: 0, RUNNING: 1, SUCCESS: 2, FAILED: 2}

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
    CREATED_AT,
) = range(len(COLUMNS))
ROW_WIDTH = len(COLUMNS)
# Fields merged with "the newer value wins when it has one".
_MERGED = range(PARAMS, CREATED_AT)

LogRow = list[Any]
RowKey = tuple[str, int]
# The buffer's key of an attempt: the task id itself for a first attempt (no
# allocation, its hash is cached), (task_id, attempt) for a retry.
BufferKey = str | tuple[str, int]


def new_row(task_id: str, attempt: int, task_name: str, created_at: float) -> LogRow:
    return [task_id, attempt, task_name, PENDING, None, None, None, None, None, None,
            None, None, None, None, created_at]  # fmt: skip


def row_key(row: LogRow) -> RowKey:
    return (row[TASK_ID], row[ATTEMPT])


def buffer_key(task_id: str, attempt: int) -> BufferKey:
    return task_id if attempt == 1 else (task_id, attempt)


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
