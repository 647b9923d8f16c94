"""PostgreSQL keeps the hourly rollups with one trigger call per writer statement,
and migration 0003 swaps 0002's row-level trigger for it without losing a count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from exporter.rows import COMPLETED_AT, DURATION_MS, PENDING, RETRIED, STATUS, log_row
from exporter.store.migrate import downgrade, upgrade
from exporter.store.pg_admin import asyncpg_dsn
from exporter.store.pg_writer import encode_batch, statements_for
from tests.integration.test_store_hourly import hourly_vs_minutes

T0 = 1_772_359_200.0  # 2026-03-01 10:00 UTC
FUNCTION = "task_execution_rollups_to_hourly"


def _finished_batch(prefix: str, names: int, minutes: int = 3) -> str:
    """One finished attempt for each of ``names`` task names in each of ``minutes``
    minutes spread over two hours: names * minutes rollup keys in one statement."""
    rows = []
    for m in range(minutes):
        for n in range(names):
            row = log_row(
                f"{prefix}-{m}-{n}", 1, f"hourly:t{n:03d}", PENDING, created_at=T0 + m * 50 * 60
            )
            row[STATUS] = "failed" if n % 5 == 0 else "success"
            row[RETRIED] = n % 10 == 0 if n % 5 == 0 else None
            row[COMPLETED_AT] = T0 + m * 50 * 60 + 1
            row[DURATION_MS] = float(n + m)
            rows.append(row)
    return encode_batch(rows)


async def _calls(conn: asyncpg.Connection) -> int:
    """The trigger function's calls not yet flushed to the statistics (they
    include this transaction's)."""
    calls = await conn.fetchval(
        "SELECT COALESCE(sum(calls), 0) FROM pg_stat_xact_user_functions WHERE funcname = $1",
        FUNCTION,
    )
    return int(calls)


async def _write(conn: asyncpg.Connection, batch: str, stamp: datetime) -> int:
    """The writer's statement, in a transaction; the trigger function's calls by it."""
    async with conn.transaction():
        before = await _calls(conn)
        # The statement the writer would pick for the schema at this revision.
        layout = await statements_for(conn, notify=False)
        await conn.fetchval(layout.finishing, batch, stamp, "unused", stamp.isoformat())
        return await _calls(conn) - before


async def _connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    await conn.execute("SET track_functions = 'pl'")  # counts the trigger's calls
    return conn


async def _trigger_levels(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT CASE WHEN tgtype & 1 = 1 THEN 'row' ELSE 'statement' END AS level"
        " FROM pg_trigger WHERE tgrelid = 'task_execution_rollups'::regclass"
        " AND NOT tgisinternal"
    )
    return {r["level"] for r in rows}


async def test_one_trigger_call_per_statement_and_hours_stay_exact(pg_store: str) -> None:
    conn = await _connect(pg_store)
    try:
        now = datetime.now(UTC)
        # 40 names x 3 minutes = 120 new minute rollups in one statement: an upsert
        # fires the INSERT and the UPDATE statement triggers once each (a row-level
        # trigger: 120 calls).
        assert await _write(conn, _finished_batch("a", 40), now) == 2
        # The same 120 keys again: every minute rollup updated, hours added up.
        assert await _write(conn, _finished_batch("b", 40), now + timedelta(seconds=1)) == 2
        got, expected = await hourly_vs_minutes(pg_store)
        assert got == expected
        assert sum(r[3] for r in got) == 240  # type: ignore[misc]
        # Retention deletes minute rollups: the hours they leave empty disappear.
        async with conn.transaction():
            before = await _calls(conn)
            await conn.execute(
                "DELETE FROM task_execution_rollups WHERE bucket_start < $1",
                datetime.fromtimestamp(T0 + 60 * 60, UTC),
            )
            assert await _calls(conn) - before == 1
        got, expected = await hourly_vs_minutes(pg_store)
        assert got == expected
        assert sum(r[3] for r in got) == 80  # type: ignore[misc]
        assert all(r[0] == datetime.fromtimestamp(T0 + 3600, UTC) for r in got)
    finally:
        await conn.close()


async def test_migration_0003_swaps_the_row_trigger_and_keeps_counts(pg_url: str) -> None:
    await upgrade(pg_url, "0002")
    conn = await _connect(pg_url)
    try:
        assert await _trigger_levels(conn) == {"row"}
        now = datetime.now(UTC)
        # 10 names x 3 minutes: one call per minute rollup row.
        assert await _write(conn, _finished_batch("a", 10), now) == 30
        await upgrade(pg_url)
        assert await _trigger_levels(conn) == {"statement"}
        # Counts made by the old trigger and the new one add up.
        assert await _write(conn, _finished_batch("b", 10), now + timedelta(seconds=1)) == 2
        got, expected = await hourly_vs_minutes(pg_url)
        assert got == expected
        assert sum(r[3] for r in got) == 60  # type: ignore[misc]
        # Retried: one name in ten, in three minutes, of the batch written at head.
        assert sum(r[5] for r in got) == 3  # type: ignore[misc]
        await downgrade(pg_url, "0002")
        assert await _trigger_levels(conn) == {"row"}
        assert await _write(conn, _finished_batch("c", 10), now + timedelta(seconds=2)) == 30
        got, expected = await hourly_vs_minutes(pg_url, retried=False)
        assert got == expected
        assert sum(r[3] for r in got) == 90  # type: ignore[misc]
    finally:
        await conn.close()
