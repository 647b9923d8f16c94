"""Events rebuilt from the store: the rows a batch's NOTIFY names (for the listener),
and what a reconnecting client (or the listener after a lost connection) missed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exporter.events import TaskEvent
from exporter.store import queries
from exporter.store.queries import LOG, AnyRow, LogFilter

PAGE = 1_000
ERROR_MESSAGE_CHARS = 500  # as in the writer's events
# What exporter.events.events_from_row reads (not the params or the traceback).
EVENT_COLUMNS = (
    LOG.id,
    LOG.task_name,
    LOG.status,
    LOG.task_id,
    LOG.attempt,
    LOG.queued_at,
    LOG.created_at,
    LOG.started_at,
    LOG.completed_at,
    LOG.duration_ms,
    LOG.error_message,
    LOG.updated_at,
)


def event_from_row(row: AnyRow) -> TaskEvent:
    """The row's current state as one event."""
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


async def rows_at(conn: AsyncConnection, *, stamps: Sequence[datetime]) -> Sequence[AnyRow]:
    """The rows whose updated_at is one of ``stamps`` (a writer's batches), in order."""
    query = (
        select(*EVENT_COLUMNS).where(LOG.updated_at.in_(stamps)).order_by(LOG.updated_at, LOG.id)
    )
    return (await conn.execute(query)).all()


async def changed_rows(
    engine: AsyncEngine, *, since: datetime, log_filter: LogFilter, limit: int
) -> AsyncIterator[AnyRow]:
    """Up to ``limit`` rows changed at or after ``since``, oldest change first, in pages."""
    after: tuple[datetime, int] | None = None
    sent = 0
    while sent < limit:
        async with engine.connect() as conn:
            rows = await queries.changed_since(
                conn, since=since, after=after, log_filter=log_filter, limit=min(PAGE, limit - sent)
            )
        for row in rows:
            yield row
        sent += len(rows)
        if len(rows) < PAGE:
            return
        after = (rows[-1].updated_at, rows[-1].id)


async def replay(
    engine: AsyncEngine, *, since: datetime, log_filter: LogFilter, limit: int
) -> AsyncIterator[TaskEvent]:
    """Up to ``limit`` events for rows changed at or after ``since`` (inclusive: a
    client may see its last event again, never lose one)."""
    async for row in changed_rows(engine, since=since, log_filter=log_filter, limit=limit):
        yield event_from_row(row)
