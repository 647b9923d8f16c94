"""Orphaned attempts are reaped with their cause; old rows leave in batches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select

from exporter.maintenance import reaper, retention
from exporter.processes import process_identity, worker_host
from exporter.store.engine import make_engine
from exporter.store.models import TaskExecutionLog, TaskExecutionRollup

LOG = TaskExecutionLog
NOW = datetime(2026, 11, 28, 12, 0, 30, tzinfo=UTC)


def running(task_id: str, started: datetime, **extra: object) -> dict[str, object]:
    return {
        "task_name": "m:task", "status": "running", "task_id": task_id, "attempt": 1,
        "started_at": started, "created_at": started, "updated_at": started,
        "worker_host": None, "worker_pid": None, **extra,
    }  # fmt: skip


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_reaper_fails_timed_out_and_dead_worker_attempts(store_url: str) -> None:
    engine = make_engine(store_url)
    here = worker_host()  # this host name and this process's pid namespace
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(LOG), [
                running("old", NOW - timedelta(hours=2)),
                running("fresh", NOW - timedelta(seconds=5), worker_host=here,
                        worker_pid=os.getpid()),
                running("killed", NOW - timedelta(seconds=5), worker_host=here,
                        worker_pid=dead_pid()),
                running("elsewhere", NOW - timedelta(seconds=5), worker_host="other-host",
                        worker_pid=dead_pid()),
            ])  # fmt: skip
        reaped = await reaper.reap_orphans(engine, older_than_seconds=3600, now=NOW)
        assert reaped == 2
        async with engine.connect() as conn:
            got = {r.task_id: r for r in await conn.execute(select(LOG))}
            rollup = (await conn.execute(
                select(func.sum(TaskExecutionRollup.count)).where(
                    TaskExecutionRollup.status == "failed"
                )
            )).scalar_one()  # fmt: skip
        assert got["old"].status == "failed"
        assert got["old"].error_message == (
            "WorkerLost: no result 3600 s after start (reaped as orphaned)"
        )
        assert got["old"].completed_at == NOW
        assert got["old"].duration_ms == 2 * 3600 * 1000
        assert got["killed"].status == "failed"
        pid = got["killed"].worker_pid
        assert got["killed"].error_message == (
            f"WorkerLost: worker process {pid} on {socket.gethostname()} is gone "
            "(reaped as orphaned)"
        )
        assert got["fresh"].status == "running"
        assert got["elsewhere"].status == "running"
        assert rollup == 2
        # A second pass finds nothing more: nothing is counted twice.
        assert await reaper.reap_orphans(engine, older_than_seconds=3600, now=NOW) == 0
    finally:
        await engine.dispose()


async def test_a_sidecar_with_the_same_host_name_tests_no_pid(store_url: str) -> None:
    """A Kubernetes pod: worker and service containers share the host name, each
    with a pid namespace of its own. A pid missing from the service's namespace
    says nothing about the worker's: only the timeout applies to it."""
    host = socket.gethostname()
    own = process_identity()
    assert own is not None  # Linux with /proc: the fast path's premise
    sidecar = worker_host("4026532999-" + str(uuid.uuid4()))  # another namespace
    missing = dead_pid()  # no such pid here; the worker's may well be alive
    engine = make_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(LOG), [
                running("in-sidecar", NOW - timedelta(seconds=5), worker_host=sidecar,
                        worker_pid=missing),
                # Written before the identity was recorded: the host name alone.
                running("unknown", NOW - timedelta(seconds=5), worker_host=host,
                        worker_pid=missing),
                running("here", NOW - timedelta(seconds=5), worker_host=worker_host(),
                        worker_pid=missing),
            ])  # fmt: skip
        # A service in a namespace of its own (a third container) tests no pid at all.
        third = "4026532998-" + str(uuid.uuid4())
        assert (
            await reaper.reap_orphans(engine, older_than_seconds=3600, now=NOW, identity=third) == 0
        )
        assert await reaper.reap_orphans(engine, older_than_seconds=3600, now=NOW) == 1
        async with engine.connect() as conn:
            status = dict((await conn.execute(select(LOG.task_id, LOG.status))).all())
        assert status == {"in-sidecar": "running", "unknown": "running", "here": "failed"}
        # The timeout still applies to every one of them.
        later = NOW + timedelta(hours=2)
        assert await reaper.reap_orphans(engine, older_than_seconds=3600, now=later) == 2
    finally:
        await engine.dispose()


async def test_retention_deletes_old_rows_and_rollups_in_batches(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        rows = []
        for i in range(25):
            created = NOW - timedelta(days=40 if i < 15 else 1, minutes=i)
            rows.append({**running(f"t{i}", created), "status": "success"})
        async with engine.begin() as conn:
            await conn.execute(insert(LOG), rows)
            await conn.execute(insert(TaskExecutionRollup), [
                {"bucket_start": NOW - timedelta(days=40), "task_name": "m:task",
                 "status": "success", "count": 15, "duration_ms_sum": 1.0},
                {"bucket_start": NOW - timedelta(days=1), "task_name": "m:task",
                 "status": "success", "count": 10, "duration_ms_sum": 1.0},
            ])  # fmt: skip
        deleted = (await retention.prune(engine, days=30, batch_rows=4, now=NOW)).rows
        assert deleted == 15
        async with engine.connect() as conn:
            left = (await conn.execute(select(func.count(LOG.id)))).scalar_one()
            rollups = (await conn.execute(select(TaskExecutionRollup.count))).scalars().all()
        assert left == 10
        assert rollups == [10]
    finally:
        await engine.dispose()


async def test_one_odd_task_id_does_not_block_the_embedded_store(sqlite_store: str) -> None:
    from exporter.rows import PENDING, STATUS, log_row
    from exporter.store.sqlite_writer import SqliteRowStore

    odd = log_row("id-\udce9", 1, "m:task\udce9", PENDING, created_at=1_700_000_000.0)
    normal = log_row("id-2", 1, "m:task", PENDING, created_at=1_700_000_000.0)
    for row in (odd, normal):
        row[STATUS] = "success"
    store = SqliteRowStore(make_engine(sqlite_store))
    try:
        await store.write([odd, normal], NOW)
        async with store.engine.connect() as conn:
            ids = sorted((await conn.execute(select(LOG.task_id))).scalars().all())
        assert ids == ["id-2", "id-\\udce9"]
    finally:
        await store.close()
