"""Attempts nobody will finish are marked failed, with the cause in error_message,
and counted in the rollups: RUNNING ones whose worker died (SIGKILL, OOM, a lost
host), and PENDING ones no worker started (the message was lost, or its queue has
no worker).

A row is counted in the rollups only if this transaction's UPDATE changed it: a
row the writer finished meanwhile is the writer's to count. A result that arrives
after the reaper leaves the row failed and counts nothing (the writer's upsert
keeps a terminal status and its rollups count rows it finishes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exporter.maintenance.rollups import add_finished
from exporter.processes import pid_alive, process_identity, split_worker_host
from exporter.rows import TaskStatus
from exporter.store.models import TaskExecutionLog

logger = logging.getLogger(__name__)
LOG = TaskExecutionLog
BATCH = 5_000
RUNNING = TaskStatus.RUNNING.value
PENDING = TaskStatus.PENDING.value
FAILED = TaskStatus.FAILED.value

# (id, task_name, created_at, duration_ms, error_message) of a row to fail.
Victim = tuple[int, str, datetime, float | None, str]


def worker_gone(worker_host: str | None, pid: int | None, identity: str | None) -> bool:
    """Whether the attempt's worker process is known to be gone: it ran in the pid
    namespace ``identity`` names (this process's) and its pid is not there. Without
    an identity on either side nothing is known, and only the timeout applies."""
    if identity is None or worker_host is None or pid is None:
        return False
    return split_worker_host(worker_host)[1] == identity and not pid_alive(pid)


def span(seconds: float) -> str:
    """A timeout as people write it: 24h, 30min, 90s."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


async def reap_orphans(
    engine: AsyncEngine,
    *,
    older_than_seconds: float,
    now: datetime | None = None,
    identity: str | None = None,
) -> int:
    """Fail RUNNING attempts started more than ``older_than_seconds`` ago, and at
    once those whose worker process is gone from this pid namespace (``identity``,
    by default this process's: exporter.processes). Returns how many."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=older_than_seconds)
    identity = identity or process_identity()
    async with engine.begin() as conn:
        query = (
            select(LOG.id, LOG.task_name, LOG.created_at, LOG.started_at, LOG.worker_host,
                   LOG.worker_pid)
            .where(LOG.status == RUNNING)
            .limit(BATCH * 4)
        )  # fmt: skip
        if _row_locks(conn):
            query = query.with_for_update(skip_locked=True)
        victims: list[Victim] = []
        for id_, name, created, started, worker_host, pid in await conn.execute(query):
            timed_out = started is not None and started < cutoff
            gone = worker_gone(worker_host, pid, identity)
            if not (timed_out or gone):
                continue
            ran_ms = (now - started).total_seconds() * 1000 if started else 0.0
            cause = (
                f"worker process {pid} on {split_worker_host(worker_host or '')[0]} is gone"
                if gone
                else f"no result {older_than_seconds:g} s after start"
            )
            message = f"WorkerLost: {cause} (reaped as orphaned)"
            victims.append((id_, name, created, ran_ms, message))
        total = await _fail(conn, victims[:BATCH], was=RUNNING, now=now)
    if total:
        logger.warning("taskiq-exporter: %d orphaned running attempts marked failed", total)
    return total


async def reap_pending(
    engine: AsyncEngine, *, older_than_seconds: float, now: datetime | None = None
) -> int:
    """Fail PENDING attempts sent more than ``older_than_seconds`` ago. Returns how many."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=older_than_seconds)
    cause = f"NeverStarted: no worker started this task within {span(older_than_seconds)}"
    total = 0
    while True:
        async with engine.begin() as conn:
            query = (
                select(LOG.id, LOG.task_name, LOG.created_at)
                .where(LOG.status == PENDING, LOG.created_at < cutoff)
                .limit(BATCH)
            )
            if _row_locks(conn):
                query = query.with_for_update(skip_locked=True)
            found = (await conn.execute(query)).all()
            victims = [(id_, name, created, None, cause) for id_, name, created in found]
            total += await _fail(conn, victims, was=PENDING, now=now)
        if len(found) < BATCH:
            break
    if total:
        logger.warning("taskiq-exporter: %d pending attempts never started, marked failed", total)
    return total


def _row_locks(conn: AsyncConnection) -> bool:
    # PostgreSQL: rows a writer is updating now are skipped, not waited for (the
    # next pass sees how that ended), and a writer waits for the rows taken here.
    # SQLite has one writer at a time.
    return conn.dialect.name == "postgresql"


async def _fail(
    conn: AsyncConnection, victims: Sequence[Victim], *, was: str, now: datetime
) -> int:
    failed = []
    for victim in victims:
        id_, _name, created, duration_ms, message = victim
        result = await conn.execute(
            update(LOG)
            # created_at too: a partitioned log then looks in one partition.
            .where(LOG.id == id_, LOG.created_at == created, LOG.status == was)
            .values(
                status=FAILED,
                completed_at=now,
                duration_ms=duration_ms,
                error_message=message,
                updated_at=now,
            )
        )
        if result.rowcount:
            failed.append(victim)
    await add_finished(conn, ((created, name, FAILED, ms) for _, name, created, ms, _ in failed))
    return len(failed)
