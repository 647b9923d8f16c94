"""The demo's own store: what the last run left running, and a failure to look at."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.maintenance.reaper import reap_orphans
from exporter.rows import TaskStatus
from exporter.store.models import TaskExecutionLog

LOG = TaskExecutionLog


async def close_previous_run(engine: AsyncEngine) -> int:
    """Mark failed every attempt still RUNNING, at once: in the demo's private store,
    before it starts, those are what the last demo was running when it stopped.
    Returns how many."""
    return await reap_orphans(engine, older_than_seconds=0)


async def newest_failure(engine: AsyncEngine) -> int | None:
    """The id of the newest failed attempt that has a traceback, if any (not one
    the demo's own stop cancelled)."""
    query = (
        select(LOG.id)
        .where(
            LOG.status == TaskStatus.FAILED.value,
            LOG.error_traceback.is_not(None),
            LOG.error_message.not_like("CancelledError%"),
        )
        .order_by(LOG.id.desc())
        .limit(1)
    )
    async with engine.connect() as conn:
        found: int | None = (await conn.execute(query)).scalar()
    return found
