"""Events rebuilt from the store: the rows a batch's NOTIFY names (for the listener),
and what a reconnecting client (or the listener after a lost connection) missed,
in bounded pages (:class:`Replay`)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.events import TaskEvent
from exporter.service.reads import Reads
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


async def changed_page(
    conn: AsyncConnection,
    *,
    since: datetime,
    after: tuple[datetime, int] | None,
    log_filter: LogFilter,
    limit: int,
) -> Sequence[AnyRow]:
    """Up to ``limit`` rows changed at or after ``since`` and after the row ``after``
    (its updated_at and id), oldest change first.

    Whatever the filter, this is one range of the updated_at index, the filter
    checked on the rows in it: the range is what keeps a replay cheap, so callers
    bound ``since`` (the service's replay horizon).
    """
    conds = [log_filter.where(), LOG.updated_at >= since]
    if after is not None:
        stamp, row_id = after
        conds += [LOG.updated_at >= stamp, or_(LOG.updated_at > stamp, LOG.id > row_id)]
    query = select(*EVENT_COLUMNS).where(*conds).order_by(LOG.updated_at, LOG.id).limit(limit)
    return (await conn.execute(query)).all()


class Replay:
    """The rows changed at or after ``since`` that match ``log_filter``, oldest change
    first, a page at a time (no connection held between pages): ``limit`` rows, plus
    the rest of the writer batch the limit falls in, since a batch's rows share one
    updated_at and a ``since`` cannot point inside it.

    When rows were left, :attr:`resume_from` is the updated_at of the first of them:
    a replay from there continues exactly where this one stopped.

    The pages come through ``reads``: from the read replica when ``replica`` is
    True and it answers, else from the primary (a page after a failed one included:
    the primary holds whatever the replica had).
    """

    def __init__(
        self,
        reads: Reads,
        *,
        since: datetime,
        log_filter: LogFilter,
        limit: int,
        replica: bool = False,
    ) -> None:
        self.reads = reads
        self.replica = replica
        self.since = since
        self.log_filter = log_filter
        self.limit = limit
        self.resume_from: datetime | None = None

    async def rows(self) -> AsyncIterator[AnyRow]:
        after: tuple[datetime, int] | None = None
        sent = 0
        last: datetime | None = None
        while True:
            # One row past the limit tells whether its batch goes on, or where to resume.
            want = min(PAGE, self.limit - sent + 1) if sent < self.limit else PAGE
            page = functools.partial(
                changed_page, since=self.since, after=after, log_filter=self.log_filter, limit=want
            )
            rows, _ = await self.reads.run(page, replica=self.replica)
            for row in rows:
                if sent >= self.limit and row.updated_at != last:
                    self.resume_from = row.updated_at
                    return
                yield row
                sent += 1
                last = row.updated_at
            if len(rows) < want:
                return
            after = (rows[-1].updated_at, rows[-1].id)

    async def events(self) -> AsyncIterator[TaskEvent]:
        """One event per row, with the row's current status."""
        async for row in self.rows():
            yield event_from_row(row)
