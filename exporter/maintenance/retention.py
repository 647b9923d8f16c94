"""Deleting what is older than the retention, in bounded batches so that the
table stays writable meanwhile."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.store.models import TaskExecutionLog, TaskExecutionRollup

logger = logging.getLogger(__name__)
LOG = TaskExecutionLog


async def prune(
    engine: AsyncEngine,
    *,
    days: float,
    batch_rows: int,
    now: datetime | None = None,
    progress: bool = False,
) -> int:
    """Delete rows created more than ``days`` ago and their rollup minutes.
    Returns the number of log rows deleted."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    deleted = 0
    while True:
        async with engine.begin() as conn:
            ids = select(LOG.id).where(LOG.created_at < cutoff).limit(batch_rows)
            result = await conn.execute(delete(LOG).where(LOG.id.in_(ids.scalar_subquery())))
            count = result.rowcount or 0
        deleted += count
        if progress and count:
            print(f"\rdeleted {deleted} rows older than {cutoff:%Y-%m-%d %H:%M}", end="",
                  file=sys.stderr, flush=True)  # fmt: skip
        if count < batch_rows:
            break
    minute = cutoff.replace(second=0, microsecond=0)
    async with engine.begin() as conn:
        rollup = TaskExecutionRollup
        await conn.execute(delete(rollup).where(rollup.bucket_start < minute))
    if progress and deleted:
        print(file=sys.stderr)
    if deleted:
        logger.info("taskiq-exporter: retention deleted %d rows older than %s", deleted, cutoff)
    return deleted
