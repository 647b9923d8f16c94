"""Attempts left RUNNING by a worker that died (SIGKILL, OOM, lost host) are
marked failed, with the cause in error_message, and counted in the rollups."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.maintenance.rollups import add_finished
from exporter.processes import pid_alive
from exporter.store.models import TaskExecutionLog, TaskStatus

logger = logging.getLogger(__name__)
LOG = TaskExecutionLog
BATCH = 5_000


async def reap_orphans(
    engine: AsyncEngine, *, older_than_seconds: float, now: datetime | None = None
) -> int:
    """Fail RUNNING attempts started more than ``older_than_seconds`` ago, and at
    once those whose worker was on this host and is gone. Returns how many."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=older_than_seconds)
    host = socket.gethostname()
    total = 0
    async with engine.begin() as conn:
        query = (
            select(LOG.id, LOG.task_name, LOG.created_at, LOG.started_at, LOG.worker_host,
                   LOG.worker_pid)
            .where(LOG.status == TaskStatus.RUNNING.value)
            .limit(BATCH * 4)
        )  # fmt: skip
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        victims: list[tuple[int, str, datetime, float, str]] = []
        for id_, name, created, started, worker_host, pid in await conn.execute(query):
            timed_out = started is not None and started < cutoff
            dead_here = worker_host == host and pid is not None and not pid_alive(pid)
            if not (timed_out or dead_here):
                continue
            ran_ms = (now - started).total_seconds() * 1000 if started else 0.0
            cause = (
                f"worker process {pid} on {worker_host} is gone"
                if dead_here
                else f"no result {older_than_seconds:g} s after start"
            )
            victims.append((id_, name, created, ran_ms, cause))
        for id_, _name, _created, ran_ms, cause in victims[:BATCH]:
            await conn.execute(
                update(LOG)
                .where(LOG.id == id_, LOG.status == TaskStatus.RUNNING.value)
                .values(
                    status=TaskStatus.FAILED.value,
                    completed_at=now,
                    duration_ms=ran_ms,
                    error_message=f"WorkerLost: {cause} (reaped as orphaned)",
                    updated_at=now,
                )
            )
            total += 1
        await add_finished(
            conn, ((created, name, "failed", ran) for _, name, created, ran, _ in victims[:BATCH])
        )
    if total:
        logger.warning("taskiq-exporter: %d orphaned running attempts marked failed", total)
    return total
