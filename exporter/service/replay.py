"""Events rebuilt from the store: what a reconnecting client (or the listener after a
lost connection) missed. Each row gives its current state, oldest change first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.events import TaskEvent
from exporter.store import queries
from exporter.store.queries import AnyRow, LogFilter

PAGE = 1_000
ERROR_MESSAGE_CHARS = 500  # as in the writer's events


def event_from_row(row: AnyRow) -> TaskEvent:
    at: datetime = row.completed_at or row.started_at or row.created_at
    terminal = row.status in queries.TERMINAL
    message = row.error_message[:ERROR_MESSAGE_CHARS] if row.error_message and terminal else None
    return TaskEvent(
        task_name=row.task_name,
        status=row.status,
        timestamp=at.isoformat(),
        task_id=row.task_id,
        attempt=row.attempt,
        duration_ms=row.duration_ms if terminal else None,
        error_message=message,
        updated_at=row.updated_at.isoformat(),
    )


async def replay(
    engine: AsyncEngine, *, since: datetime, log_filter: LogFilter, limit: int
) -> AsyncIterator[TaskEvent]:
    """Up to ``limit`` events for rows changed at or after ``since`` (inclusive: a
    client may see its last event again, never lose one), in pages."""
    after: tuple[datetime, int] | None = None
    sent = 0
    while sent < limit:
        async with engine.connect() as conn:
            rows = await queries.changed_since(
                conn, since=since, after=after, log_filter=log_filter, limit=min(PAGE, limit - sent)
            )
        for row in rows:
            yield event_from_row(row)
        sent += len(rows)
        if len(rows) < PAGE:
            return
        after = (rows[-1].updated_at, rows[-1].id)
