"""The time-partitioned log on PostgreSQL: partitions made ahead, rows that no
partition covers, retention dropping whole partitions, and the upgrade of an
unpartitioned log with its rows."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from exporter.maintenance import retention
from exporter.rows import COMPLETED_AT, DURATION_MS, PENDING, STATUS, SUCCESS, LogRow, log_row
from exporter.store import migrate, partitions
from exporter.store.engine import make_engine
from exporter.store.pg_admin import asyncpg_dsn
from exporter.store.pg_writer import PostgresRowStore
from tests.helpers.rows import insert_logs, stored_row
from tests.helpers.serving import running_service

DAY = timedelta(days=1)


@pytest.fixture
async def migrated(pg_url: str) -> str:
    """Migrated to head, no partition made yet: each test makes its own days."""
    await migrate.upgrade(pg_url)
    return pg_url


def _pending(task_id: str, at: datetime, name: str = "app:task") -> LogRow:
    return log_row(task_id, 1, name, PENDING, queued_at=at.timestamp(), created_at=at.timestamp())


def _finished(task_id: str, at: datetime, name: str = "app:task") -> LogRow:
    row = log_row(task_id, 1, name, PENDING, created_at=at.timestamp())
    row[STATUS] = SUCCESS
    row[COMPLETED_AT] = at.timestamp() + 0.5
    row[DURATION_MS] = 500.0
    return row


async def _write(url: str, *batches: list[LogRow]) -> None:
    store = PostgresRowStore(make_engine(url))
    try:
        for batch in batches:
            await store.write(batch, datetime.now(UTC))
    finally:
        await store.close()


async def _where(url: str) -> dict[str, tuple[str, str, int]]:
    """task_id -> (partition, status, rows of that task id)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT task_id, tableoid::regclass::text AS part, status,"
            " count(*) OVER (PARTITION BY task_id) AS n FROM task_execution_logs"
        )
    finally:
        await conn.close()
    return {r["task_id"]: (r["part"], r["status"], r["n"]) for r in rows}


async def _ensure(url: str, now: datetime, **kw: float) -> list[partitions.Partition]:
    engine = make_engine(url)
    try:
        return await partitions.ensure(
            engine,
            interval_hours=int(kw.get("interval_hours", 24)),
            ahead_hours=kw.get("ahead_hours", 72.0),
            keep_days=kw.get("keep_days", 30.0),
            now=now,
        )
    finally:
        await engine.dispose()


async def _partitions(url: str) -> list[partitions.Partition]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await partitions.partitions(conn)
    finally:
        await engine.dispose()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", "db", *args],
        env=dict(os.environ), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_db_upgrade_makes_the_partitions_ahead_and_a_default_one(pg_url: str) -> None:
    run = _cli("upgrade", "--database-url", pg_url)
    assert run.returncode == 0, run.stderr
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert f"made 4 partitions of the log, for {datetime.now(UTC):%Y-%m-%d} 00:00 to " in run.stdout
    found = asyncio.run(_partitions(pg_url))
    assert found[-1].default
    days = [p for p in found if not p.default]
    # From today's start until a partition covers 72 hours from now.
    now = datetime.now(UTC)
    assert days[0].lo == partitions.floor_to(now, 24)
    assert days[-1].lo <= now + timedelta(hours=72) < days[-1].hi  # type: ignore[operator]
    assert all(a.hi == b.lo for a, b in itertools.pairwise(days))
    listed = _cli("partitions", "--database-url", pg_url)
    assert f"task_execution_logs_p{today} [" in listed.stdout
    assert "task_execution_logs_default (default)" in listed.stdout


async def test_the_sender_and_the_worker_meet_in_one_row_of_its_day(migrated: str) -> None:
    now = datetime.now(UTC).replace(microsecond=123456)
    await _ensure(migrated, now)
    await _write(migrated, [_pending("t1", now)], [_finished("t1", now)])
    assert await _where(migrated) == {"t1": (f"task_execution_logs_p{now:%Y%m%d}", "success", 1)}


async def test_rows_no_partition_covers_are_kept_in_the_default_one(migrated: str) -> None:
    now = datetime.now(UTC)
    await _ensure(migrated, now)
    past, future = datetime(1999, 1, 2, tzinfo=UTC), datetime(2090, 5, 6, tzinfo=UTC)
    await _write(migrated, [_pending("old", past), _pending("new", future)])
    await _write(migrated, [_finished("old", past), _finished("new", future)])
    assert await _where(migrated) == {
        "old": ("task_execution_logs_default", "success", 1),
        "new": ("task_execution_logs_default", "success", 1),
    }


async def test_a_new_partition_takes_the_rows_the_default_held_for_it(migrated: str) -> None:
    now = datetime(2030, 6, 1, 12, tzinfo=UTC)
    await _ensure(migrated, now)
    later = now + 10 * DAY
    await _write(migrated, [_pending("ahead", later)])
    assert (await _where(migrated))["ahead"][0] == "task_execution_logs_default"
    made = await _ensure(migrated, later - DAY)
    assert f"task_execution_logs_p{later:%Y%m%d}" in [p.name for p in made]
    assert (await _where(migrated))["ahead"][0] == f"task_execution_logs_p{later:%Y%m%d}"
    # The worker's row finds the moved one: still one row.
    await _write(migrated, [_finished("ahead", later)])
    assert (await _where(migrated))["ahead"] == (
        f"task_execution_logs_p{later:%Y%m%d}",
        "success",
        1,
    )


async def test_hourly_partitions_follow_the_interval(migrated: str) -> None:
    now = datetime(2030, 6, 1, 12, 30, tzinfo=UTC)
    made = await _ensure(migrated, now, interval_hours=6, ahead_hours=12)
    bounds = [datetime(2030, 6, 1, 12, tzinfo=UTC) + timedelta(hours=h) for h in (0, 6, 12, 18)]
    assert [(p.name, p.lo, p.hi) for p in made] == [
        ("task_execution_logs_p2030060112", bounds[0], bounds[1]),
        ("task_execution_logs_p2030060118", bounds[1], bounds[2]),
        ("task_execution_logs_p2030060200", bounds[2], bounds[3]),
    ]


async def _counts(url: str) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """(task_name, status) -> count, from the log and from the minute rollups."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        log = await conn.fetch(
            "SELECT task_name, status, count(*) FROM task_execution_logs"
            " WHERE status IN ('success', 'failed') GROUP BY 1, 2"
        )
        rollups = await conn.fetch(
            "SELECT task_name, status, sum(count) FROM task_execution_rollups GROUP BY 1, 2"
        )
    finally:
        await conn.close()
    return ({(r[0], r[1]): r[2] for r in log}, {(r[0], r[1]): r[2] for r in rollups})


async def test_retention_drops_whole_partitions_and_counts_stay_exact(migrated: str) -> None:
    start = datetime(2030, 6, 1, tzinfo=UTC)
    await _ensure(migrated, start, ahead_hours=24 * 6)
    rows = [
        stored_row(task_name=f"app:t{i % 3}", status=("success", "failed")[i % 2],
                   created_at=start + i * timedelta(hours=5, minutes=7, seconds=11))
        for i in range(30)  # six days, every partition
    ]  # fmt: skip
    await insert_logs(migrated, rows)
    before = await _partitions(migrated)
    now = start + 4 * DAY + timedelta(hours=13, minutes=20, seconds=30)
    engine = make_engine(migrated)
    try:
        pruned = await retention.prune(engine, days=2, batch_rows=3, now=now)
    finally:
        await engine.dispose()
    # The boundary (June 3rd, 13:20) falls in June 3rd's partition: it waits, and
    # the log is cut at its start; June 1st and 2nd went whole, row by row nothing.
    assert pruned.before == start + 2 * DAY
    assert [p.name for p in pruned.dropped] == [
        "task_execution_logs_p20300601",
        "task_execution_logs_p20300602",
    ]
    assert pruned.rows == 0
    after = await _partitions(migrated)
    assert [p.name for p in after] == [p.name for p in before][2:]
    left = sum(1 for r in rows if r["created_at"] >= start + 2 * DAY)  # type: ignore[operator]
    log, rollups = await _counts(migrated)
    assert sum(log.values()) == left
    assert log == rollups


async def test_retention_deletes_from_the_default_partition_too(migrated: str) -> None:
    start = datetime(2030, 6, 1, tzinfo=UTC)
    await _ensure(migrated, start + 3 * DAY)
    # Created before the partitions: held by the default partition.
    old = [stored_row(created_at=start + timedelta(hours=h, seconds=30)) for h in range(0, 48, 6)]
    await insert_logs(migrated, old)
    engine = make_engine(migrated)
    try:
        pruned = await retention.prune(
            engine, days=1, batch_rows=2, now=start + 2 * DAY + timedelta(minutes=90)
        )
    finally:
        await engine.dispose()
    assert pruned.before == start + DAY + timedelta(minutes=90)
    assert pruned.rows == 5  # the rows of June 1st and the first of June 2nd, in batches
    log, rollups = await _counts(migrated)
    assert sum(log.values()) == 3
    assert log == rollups


async def _unpartitioned_with_rows(url: str, now: datetime) -> list[dict[str, object]]:
    await migrate.upgrade(url, "0003")
    rows = [
        stored_row(task_id=f"old{i}", created_at=now - timedelta(days=10, minutes=13 * i))
        for i in range(20)
    ]
    rows.append(stored_row(task_id="today", status="pending", created_at=now))
    rows.append(stored_row(task_id="skewed", created_at=datetime(2090, 1, 1, tzinfo=UTC)))
    await insert_logs(url, rows)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(
            "DO $$ BEGIN CREATE ROLE texp_part_reader; EXCEPTION WHEN duplicate_object"
            " THEN NULL; END $$"
        )
        await conn.execute(
            "GRANT SELECT, UPDATE (status) ON task_execution_logs TO texp_part_reader"
        )
        await conn.execute(
            "CREATE VIEW recent_names AS SELECT task_id, task_name FROM task_execution_logs"
        )
        await conn.execute("GRANT SELECT ON recent_names TO texp_part_reader")
    finally:
        await conn.close()
    return rows


async def _privileges(url: str) -> tuple[bool, bool, bool, int]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return tuple(  # type: ignore[return-value]
            await conn.fetchrow(
                "SELECT has_table_privilege('texp_part_reader', 'task_execution_logs', 'SELECT'),"
                " has_column_privilege('texp_part_reader', 'task_execution_logs', 'status',"
                " 'UPDATE'),"
                " has_column_privilege('texp_part_reader', 'task_execution_logs', 'params',"
                " 'UPDATE'),"
                " (SELECT count(*) FROM recent_names)"
            )
        )
    finally:
        await conn.close()


async def test_an_unpartitioned_log_upgrades_with_its_rows_and_downgrades(pg_url: str) -> None:
    now = datetime.now(UTC)
    rows = await _unpartitioned_with_rows(pg_url, now)
    engine = make_engine(pg_url)
    try:
        assert await partitions.prepare_upgrade(engine)  # the keys, concurrently
        await migrate.upgrade(pg_url)
        await partitions.ensure(engine, interval_hours=24, ahead_hours=72, keep_days=30)
    finally:
        await engine.dispose()
    where = await _where(pg_url)
    assert len(where) == len(rows)
    assert {p for p, _s, _n in where.values()} == {
        "task_execution_logs_legacy",
        "task_execution_logs_default",
    }
    assert where["skewed"][0] == "task_execution_logs_default"
    assert await _privileges(pg_url) == (True, True, False, len(rows))
    # The worker finishes the attempt the old table held: the same row; a new
    # attempt goes to its day's partition and continues the ids.
    await _write(pg_url, [_finished("today", now)], [_pending("fresh", now + timedelta(hours=80))])
    where = await _where(pg_url)
    assert where["today"] == ("task_execution_logs_legacy", "success", 1)
    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        ids = await conn.fetchval(
            "SELECT max(id) FROM task_execution_logs WHERE task_id <> 'fresh'"
        )
        fresh = await conn.fetchval("SELECT id FROM task_execution_logs WHERE task_id = 'fresh'")
    finally:
        await conn.close()
    assert fresh > ids
    await migrate.downgrade(pg_url, "0003")
    assert len(await _where(pg_url)) == len(rows) + 1
    assert await _privileges(pg_url) == (True, True, False, len(rows) + 1)
    await _write(pg_url, [_finished("fresh", now + timedelta(hours=80))])  # the old key again
    assert (await _where(pg_url))["fresh"] == ("task_execution_logs", "success", 1)


async def test_writers_during_the_upgrade_lose_nothing(pg_url: str) -> None:
    """A batch that meets the swap fails once; the store reconnects, finds the new
    table's key, and the retry lands: every row once."""
    now = datetime.now(UTC)
    await _unpartitioned_with_rows(pg_url, now)
    store = PostgresRowStore(make_engine(pg_url))
    written: list[str] = []
    failures = 0

    async def keep_writing() -> None:
        nonlocal failures
        for i in range(200):
            batch = [_pending(f"w{i}", now + timedelta(milliseconds=i))]
            while True:
                try:
                    await store.write(batch, datetime.now(UTC))
                    break
                except Exception:
                    failures += 1
                    await asyncio.sleep(0.02)
            written.append(f"w{i}")
            await asyncio.sleep(0.005)

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.2)
    try:
        await migrate.upgrade(pg_url)
        await writer
    finally:
        await store.close()
    where = await _where(pg_url)
    assert all(where[w][2] == 1 for w in written)
    assert len(written) == 200
    assert where["w199"][0] == "task_execution_logs_legacy"  # today: the old rows' partition
    assert failures <= 3


@pytest.mark.parametrize("hours", [5, 0, 25, 768])
def test_a_partition_interval_must_cut_days_evenly(hours: int) -> None:
    from pydantic import ValidationError

    from exporter.settings import ExporterSettings

    with pytest.raises(ValidationError, match=r"divisor of 24|at most 744"):
        ExporterSettings(partition_interval_hours=hours)


async def test_the_partitions_a_query_reads_follow_its_time_range(migrated: str) -> None:
    now = datetime(2030, 6, 1, 12, tzinfo=UTC)
    await _ensure(migrated, now, ahead_hours=24 * 5)
    engine = make_engine(migrated)
    try:
        async with engine.connect() as conn:
            plan = (
                (
                    await conn.execute(
                        text(
                            "EXPLAIN SELECT * FROM task_execution_logs"
                            " WHERE created_at >= :lo AND created_at < :hi ORDER BY created_at DESC"
                        ),
                        {"lo": now + DAY, "hi": now + 2 * DAY},
                    )
                )
                .scalars()
                .all()
            )
    finally:
        await engine.dispose()
    scanned = {m for line in plan for m in re.findall(r" on (task_execution_logs_\w+)", line)}
    assert scanned == {"task_execution_logs_p20300602", "task_execution_logs_p20300603"}


async def _plans(url: str, statements: list[tuple[str, tuple[object, ...]]]) -> list[set[str]]:
    """The partitions each statement's plan reads (after pruning at plan time)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        scanned = []
        for sql, params in statements:
            plan = await conn.fetch(f"EXPLAIN {sql}", *params)
            lines = [r[0] for r in plan]
            scanned.append(
                {m for line in lines for m in re.findall(r" on (task_execution_logs_\w+)", line)}
            )
        return scanned
    finally:
        await conn.close()


async def test_api_queries_with_a_time_range_read_only_its_partitions(pg_url: str) -> None:
    """Every statement the history and summary endpoints send with a time bound
    reads the partitions of that range, not all of them. (The one without: the
    pending and running rows, read from each partition's small partial index.)"""
    now = datetime.now(UTC)
    await migrate.upgrade(pg_url)
    await _ensure(pg_url, now - 8 * DAY, ahead_hours=10 * 24)
    rows = [
        stored_row(task_name=f"app:t{i % 2}", status=("success", "failed")[i % 2],
                   created_at=now - timedelta(hours=7 * i, minutes=3))
        for i in range(25)
    ]  # fmt: skip
    rows.append(stored_row(task_name="app:t1", status="pending", created_at=now - 3 * DAY))
    await insert_logs(pg_url, rows)
    every = {p.name for p in await _partitions(pg_url)}
    day = partitions.floor_to(now, 24) - 3 * DAY
    span = f"start_date={day:%Y-%m-%dT%H:%M:%S}&end_date={day + DAY:%Y-%m-%dT%H:%M:%S}"
    calls = {
        "one day": f"/api/v1/monitoring/history?{span}",
        "one day, page 2": f"/api/v1/monitoring/history?{span}&page=2&page_size=1",
        "one day, a task, a status": f"/api/v1/monitoring/history?task_name=app:t1&status=failed"
        f"&{span}",
        "summary of the last hour": "/api/v1/monitoring/metrics?time_window=1",
        "summary of a day": "/api/v1/monitoring/metrics?time_window=24",
    }
    captured: list[tuple[str, tuple[object, ...]]] = []

    def capture(_conn: object, _cursor: object, sql: str, params: object, *_: object) -> None:
        bounded = "created_at >=" in sql or "created_at <" in sql
        if "FROM task_execution_logs" in sql and bounded:
            captured.append((sql, tuple(params or ())))  # type: ignore[arg-type]

    read: dict[str, list[set[str]]] = {}
    event.listen(Engine, "before_cursor_execute", capture)
    try:
        async with running_service(pg_url) as (_app, client):
            for label, path in calls.items():
                captured.clear()
                response = await client.get(path)
                assert response.status_code == 200, response.text
                plans = await _plans(pg_url, captured)
                read[label] = [scanned & every for scanned in plans]
    finally:
        event.remove(Engine, "before_cursor_execute", capture)

    def named(at: datetime) -> str:
        return partitions.partition_name(partitions.floor_to(at, 24), 24)

    that_day = {named(day)}
    assert read["one day"], "the history sent no bounded statement"
    for label in ("one day", "one day, page 2", "one day, a task, a status"):
        assert all(s <= that_day for s in read[label]), (label, read[label])
    # The partial minutes at both ends of a window are counted from the rows.
    listed = await _partitions(pg_url)
    for label, hours in (("summary of the last hour", 1), ("summary of a day", 24)):
        since = now - timedelta(hours=hours)
        allowed = {p.name for p in listed if p.default or (p.hi is not None and p.hi > since)}
        assert read[label], label
        assert all(s <= allowed for s in read[label]), (label, read[label])
        assert all(s != every for s in read[label]), (label, read[label])
