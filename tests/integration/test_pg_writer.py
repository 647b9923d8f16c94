"""The PostgreSQL batch statement under concurrent writers of the same attempt."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy import func, select

from exporter.rows import COMPLETED_AT, DURATION_MS, PENDING, STATUS, log_row
from exporter.store.engine import make_engine
from exporter.store.models import TaskExecutionLog, TaskExecutionRollup
from exporter.store.pg_admin import asyncpg_dsn
from exporter.store.pg_writer import PostgresRowStore, Statements, encode_batch

WRITE_AND_NOTIFY = Statements.build(partitioned=True, notify=True).finishing


async def test_a_late_pending_row_racing_the_finished_one_is_counted_once(pg_store: str) -> None:
    engine = make_engine(pg_store)
    now = datetime.now(UTC)
    finished = log_row("t1", 1, "race:task", PENDING, created_at=1_700_000_000.0)
    finished[STATUS] = "success"
    finished[COMPLETED_AT] = 1_700_000_001.0
    finished[DURATION_MS] = 12.5
    pending = log_row("t1", 1, "race:task", PENDING, created_at=1_700_000_000.0)

    def args(row: list[object], stamp: datetime) -> tuple[object, ...]:
        return (encode_batch([row]), stamp, "test_channel", stamp.isoformat())

    dsn = asyncpg_dsn(pg_store)
    worker, client = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        worker_tx = worker.transaction()
        await worker_tx.start()
        await worker.fetchval(WRITE_AND_NOTIFY, *args(finished, now))
        # The client's batch starts before the worker commits: its snapshot has
        # no row yet, and its insert waits on the worker's.
        late = asyncio.create_task(
            client.fetchval(WRITE_AND_NOTIFY, *args(pending, now + timedelta(milliseconds=3)))
        )
        await asyncio.sleep(0.3)
        assert not late.done()
        await worker_tx.commit()
        await late
        async with engine.connect() as conn:
            status = (await conn.execute(select(TaskExecutionLog.status))).scalar_one()
            counted = (await conn.execute(select(func.sum(TaskExecutionRollup.count)))).scalar_one()
        assert status == "success"
        assert counted == 1
    finally:
        await worker.close()
        await client.close()
        await engine.dispose()


async def test_a_batch_that_finishes_nothing_skips_the_rollups(pg_store: str) -> None:
    """A sender's PENDING batch cannot finish a row: the store sends it without the
    rollups, whose statement-level triggers would otherwise fire, empty, per batch."""
    dsn = asyncpg_dsn(pg_store)
    admin = await asyncpg.connect(dsn)
    database = await admin.fetchval("SELECT current_database()")
    await admin.execute(f"ALTER DATABASE \"{database}\" SET track_functions = 'pl'")
    store = PostgresRowStore(make_engine(pg_store))
    try:
        now = datetime.now(UTC)
        await store.write(
            [
                log_row(f"p{i}", 1, "skip:task", PENDING, created_at=1_700_000_000.0)
                for i in range(5)
            ],
            now,
        )
        finished = log_row("p0", 1, "skip:task", PENDING, created_at=1_700_000_000.0)
        finished[STATUS] = "success"
        await store.write([finished], now + timedelta(milliseconds=1))
        await store.close()  # the session's function statistics are flushed as it ends
        calls = None
        for _ in range(100):
            await admin.execute("SELECT pg_stat_clear_snapshot()")
            calls = await admin.fetchval(
                "SELECT calls FROM pg_stat_user_functions"
                " WHERE funcname = 'task_execution_rollups_to_hourly'"
            )
            if calls:
                break
            await asyncio.sleep(0.05)
        # The finished batch's upsert fires the INSERT and UPDATE triggers once each.
        assert calls == 2
        rolled_up = await admin.fetchval("SELECT sum(count) FROM task_execution_rollups_hourly")
        assert rolled_up == 1
    finally:
        await store.close()
        await admin.close()
