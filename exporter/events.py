"""Live task events: the shape shared by the writer, the service and its clients.

Transport on PostgreSQL: each writer batch ends with ``NOTIFY taskiq_exporter_events,
'<updated_at ISO stamp of the batch>'`` in the batch's transaction. A listener
reads the rows with ``updated_at = stamp`` (indexed) and turns each into events
with :func:`events_from_row`, remembering per attempt how far it has already
reported (so a task that started and finished within one batch still yields its
``running`` event, and nothing is reported twice). A reconnecting client passes
the last ``updated_at`` it saw and gets the rows changed since, the same way.
In the embedded SQLite mode the writer publishes events to an in-process
:class:`EventHub` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PG_CHANNEL = "taskiq_exporter_events"

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One status change of one attempt, as the seed's WebSocket contract shapes it."""

    task_name: str
    status: str
    timestamp: str  # ISO 8601 UTC, when the change happened in the worker
    task_id: str
    attempt: int
    duration_ms: float | None
    error_message: str | None
    updated_at: str  # ISO 8601 UTC, the row's updated_at after this write (resume cursor)

    def to_message(self) -> dict[str, Any]:
        return {
            "type": "task_event",
            "task_name": self.task_name,
            "status": self.status,
            "timestamp": self.timestamp,
            "data": {
                "task_id": self.task_id,
                "attempt": self.attempt,
                "duration_ms": self.duration_ms,
                "error_message": self.error_message,
                "updated_at": self.updated_at,
            },
        }


_RANK = {"pending": 0, "running": 1, "success": 2, "failed": 2}


def events_from_row(row: dict[str, Any], reported_rank: int = -1) -> list[TaskEvent]:
    """The events a stored row implies beyond ``reported_rank`` (-1: none yet).

    ``row`` holds the columns task_name, status, task_id, attempt, queued_at,
    created_at, started_at, completed_at (datetimes), duration_ms, error_message
    and updated_at.
    """
    status = row["status"]
    stamp = row["updated_at"].isoformat()
    steps: list[tuple[str, Any]] = []
    if reported_rank < 0 and status == "pending":
        steps.append(("pending", row.get("queued_at") or row["created_at"]))
    if reported_rank < 1 and row.get("started_at") is not None:
        steps.append(("running", row["started_at"]))
    if _RANK.get(status, 0) == 2 and reported_rank < 2:
        steps.append((status, row.get("completed_at") or row["updated_at"]))
    events = []
    for step, at in steps:
        terminal = _RANK[step] == 2
        message = row.get("error_message") if terminal else None
        events.append(
            TaskEvent(
                task_name=row["task_name"],
                status=step,
                timestamp=at.isoformat(),
                task_id=row["task_id"],
                attempt=row["attempt"],
                duration_ms=row.get("duration_ms") if terminal else None,
                error_message=message[:500] if message else None,
                updated_at=stamp,
            )
        )
    return events


def rank(status: str) -> int:
    return _RANK.get(status, -1)


class EventHub:
    """In-process fan-out of events to subscribers (bounded queues, slow ones lose
    the oldest events and can catch up from the store)."""

    def __init__(self, *, queue_size: int = 10_000) -> None:
        self._queues: set[asyncio.Queue[TaskEvent]] = set()
        self._queue_size = queue_size

    def publish(self, events: list[TaskEvent]) -> None:
        for queue in list(self._queues):
            for event in events:
                if queue.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                queue.put_nowait(event)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[TaskEvent]]:
        queue: asyncio.Queue[TaskEvent] = asyncio.Queue(self._queue_size)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._queues)
