"""Deleting what is older than the retention, in bounded batches so that the
table stays writable meanwhile.

Counts stay exact across a run. A finished row is counted in the minute rollup of
its ``created_at`` (the writers' ``date_trunc('minute', created_at)``; a finished
row's ``created_at`` never changes), and the hourly rollups follow the minutes
through triggers, deletes included. So the log and the rollups are cut on one
boundary: the cutoff floored to its minute, on ``created_at``. The log rows
deleted are then exactly the rows the deleted minute rollups counted, and an hour
the boundary cuts keeps the sum of its remaining minutes. (A mid-minute cutoff
would delete some rows of the cutoff's minute and keep their rollup: counts above
the log. Up to a minute more of history is kept instead.)

The last batch, the one that finds fewer rows than a batch, deletes the rollups
in its own transaction, with one snapshot for both deletes (REPEATABLE READ on
PostgreSQL; SQLite has one writer at a time): a row a writer or the reaper
finishes meanwhile, and its rollup, are then either both deleted or both kept,
and a concurrent change to a row or rollup being deleted makes the batch retry.
Between batches the rollups still count rows already deleted; the counts are
exact again when the run ends.

A partitioned log (PostgreSQL) first drops the partitions that end at or before
the boundary, whole, with the rollups before their end (exporter/store/partitions.py).
The partition the boundary falls in then waits until it can go whole too: the
log and the rollups are cut at its start, so up to one partition's interval more
of history is kept. Only the legacy partition of an upgraded installation and
the default partition are deleted from in batches.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exporter.store import partitions
from exporter.store.models import TaskExecutionLog, TaskExecutionRollup
from exporter.store.ranges import floor_minute

logger = logging.getLogger(__name__)
LOG = TaskExecutionLog
# PostgreSQL's serialization failure and deadlock: the batch is retried.
RETRY_SQLSTATES = frozenset(("40001", "40P01"))
RETRIES = 5


def boundary(now: datetime, days: float) -> datetime:
    """Rows created before this go: the cutoff floored to the rollups' minute."""
    return floor_minute(now - timedelta(days=days))


async def _batch(conn: AsyncConnection, before: datetime, batch_rows: int) -> tuple[int, bool]:
    """Delete up to ``batch_rows`` log rows created before ``before``; when that
    was the last of them, the minute rollups before it too. Returns (rows, done)."""
    ids = select(LOG.id).where(LOG.created_at < before).limit(batch_rows)
    # The time bound again on the delete: a partitioned log then looks for the ids
    # only in the partitions before the boundary.
    result = await conn.execute(
        delete(LOG).where(LOG.created_at < before, LOG.id.in_(ids.scalar_subquery()))
    )
    count = result.rowcount or 0
    if count >= batch_rows:
        return count, False
    rollup = TaskExecutionRollup
    await conn.execute(delete(rollup).where(rollup.bucket_start < before))
    return count, True


async def _run_batch(engine: AsyncEngine, before: datetime, batch_rows: int) -> tuple[int, bool]:
    for attempt in range(RETRIES + 1):
        try:
            async with engine.connect() as conn:
                if conn.dialect.name == "postgresql":
                    conn = await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    return await _batch(conn, before, batch_rows)
        except DBAPIError as exc:
            if partitions.sqlstate(exc) not in RETRY_SQLSTATES or attempt == RETRIES:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class Pruned:
    """What one retention run removed: log rows deleted in batches, partitions
    dropped whole, and where the log is cut now."""

    before: datetime
    rows: int = 0
    dropped: list[partitions.Partition] = field(default_factory=list)


async def prune(
    engine: AsyncEngine,
    *,
    days: float,
    batch_rows: int,
    now: datetime | None = None,
    progress: bool = False,
) -> Pruned:
    """Delete rows created before the minute of ``now - days`` and the rollup
    minutes before it (on a partitioned log, before the start of the partition
    that minute falls in)."""
    before, dropped = await partitions.drop_expired(
        engine, boundary(now or datetime.now(UTC), days)
    )
    pruned = Pruned(before=before, dropped=dropped)
    while True:
        count, done = await _run_batch(engine, before, batch_rows)
        pruned.rows += count
        if progress and count:
            print(f"\rdeleted {pruned.rows} rows older than {before:%Y-%m-%d %H:%M}", end="",
                  file=sys.stderr, flush=True)  # fmt: skip
        if done:
            break
    if progress and pruned.rows:
        print(file=sys.stderr)
    if pruned.rows:
        logger.info("taskiq-exporter: retention deleted %d rows older than %s", pruned.rows, before)
    return pruned
