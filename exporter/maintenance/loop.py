"""The service runs the reaper and the store's upkeep (partitions ahead, then
retention) on their intervals. On PostgreSQL an advisory lock makes one replica
do each job at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.maintenance import reaper, retention
from exporter.settings import ExporterSettings
from exporter.store import partitions

logger = logging.getLogger(__name__)
LOCK_REAPER = 0x7A51_0001
LOCK_RETENTION = 0x7A51_0002
STARTUP_DELAY_SECONDS = 5.0


@contextlib.asynccontextmanager
async def _exclusive(engine: AsyncEngine, key: int) -> AsyncIterator[bool]:
    if engine.dialect.name != "postgresql":
        yield True
        return
    async with engine.connect() as conn:
        got = bool(
            (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
        )
        try:
            yield got
        finally:
            if got:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            await conn.commit()


async def _every(
    seconds: float, engine: AsyncEngine, key: int, job: Callable[[], Awaitable[object]]
) -> None:
    # Not at once: a service that starts and stops right away (tests, a crash
    # loop) should not be cut off in the middle of a batch.
    await asyncio.sleep(min(seconds, STARTUP_DELAY_SECONDS))
    while True:
        try:
            async with _exclusive(engine, key) as mine:
                if mine:
                    await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("taskiq-exporter: maintenance job failed; retrying next interval")
        await asyncio.sleep(seconds)


async def reap(engine: AsyncEngine, settings: ExporterSettings) -> int:
    """Both reapers, one after the other (under one lock in the loop). Returns
    how many attempts they marked failed."""
    orphans = await reaper.reap_orphans(engine, older_than_seconds=settings.orphan_timeout_seconds)
    return orphans + await reaper.reap_pending(
        engine, older_than_seconds=settings.pending_timeout_seconds
    )


async def make_partitions(
    engine: AsyncEngine, settings: ExporterSettings
) -> list[partitions.Partition]:
    """The log's partitions ahead of time (PostgreSQL; nothing elsewhere). A role
    that may not make them is told so: rows then go to the default partition."""
    try:
        return await partitions.ensure(
            engine,
            interval_hours=settings.partition_interval_hours,
            ahead_hours=settings.partition_ahead_hours,
            keep_days=settings.retention_days,
        )
    except DBAPIError as exc:
        if partitions.sqlstate(exc) != partitions.INSUFFICIENT_PRIVILEGE:
            raise
        logger.warning(
            "taskiq-exporter: this role may not make the log's partitions (only its owner "
            "may): new rows go to the default partition until `taskiq-exporter db upgrade` "
            "runs as the owner"
        )
        return []


async def upkeep(engine: AsyncEngine, settings: ExporterSettings) -> retention.Pruned:
    """Partitions ahead, then retention: one job, as both change the partitions."""
    made = await make_partitions(engine, settings)
    if made:
        logger.info(
            "taskiq-exporter: made %d partitions of the log, up to %s",
            len(made),
            f"{made[-1].hi:%F %H:%M}",
        )
    return await retention.prune(
        engine, days=settings.retention_days, batch_rows=settings.retention_batch_rows
    )


async def run_maintenance(engine: AsyncEngine, settings: ExporterSettings) -> None:
    """Run until cancelled."""
    s = settings
    await asyncio.gather(
        _every(s.reaper_interval_seconds, engine, LOCK_REAPER, lambda: reap(engine, s)),
        _every(s.retention_interval_seconds, engine, LOCK_RETENTION, lambda: upkeep(engine, s)),
    )
