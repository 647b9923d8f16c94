"""Retention cuts the log and the rollups on one minute boundary: after a run whose
cutoff falls mid-minute, every count the service reads (minute and hourly rollups,
history totals, the metrics window) still equals the rows left in the log.

Rows go through the real row stores (the writer's statements and rollups, the
hourly triggers), on PostgreSQL and on SQLite.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.maintenance import retention
from exporter.rows import (
    COMPLETED_AT,
    DURATION_MS,
    ERROR_MESSAGE,
    FAILED,
    PENDING,
    RUNNING,
    STARTED_AT,
    STATUS,
    SUCCESS,
    LogRow,
    log_row,
)
from exporter.store.counts import finished_buckets, task_totals
from exporter.store.engine import is_sqlite, make_engine
from exporter.store.models import TaskExecutionLog, TaskExecutionRollup, TaskExecutionRollupHourly
from exporter.store.pg_writer import PostgresRowStore
from exporter.store.queries import LogFilter, live_created_at, snapshot
from exporter.store.ranges import split
from exporter.store.sqlite_writer import SqliteRowStore

pytestmark = pytest.mark.integration

LOG = TaskExecutionLog
DAYS = 30.0
# The cutoff (NOW - 30 days) is 2026-03-01 10:47:30: mid-minute, mid-hour.
NOW = datetime(2026, 3, 31, 10, 47, 30, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=DAYS)
BOUNDARY = datetime(2026, 3, 1, 10, 47, tzinfo=UTC)
# Minutes around the boundary (and in the hours around it), rows at these seconds.
MINUTES = [
    datetime(2026, 3, 1, 9, 58, tzinfo=UTC),
    datetime(2026, 3, 1, 10, 5, tzinfo=UTC),
    datetime(2026, 3, 1, 10, 45, tzinfo=UTC),
    datetime(2026, 3, 1, 10, 46, tzinfo=UTC),
    BOUNDARY,
    datetime(2026, 3, 1, 10, 48, tzinfo=UTC),
    datetime(2026, 3, 1, 10, 59, tzinfo=UTC),
    datetime(2026, 3, 1, 11, 2, tzinfo=UTC),
]
SECONDS = (10, 29, 31, 50)
NAMES = ("exact:alpha", "exact:beta", "exact:gamma")
STATUSES = (SUCCESS, FAILED, PENDING, RUNNING)


def _rows() -> list[tuple[str, datetime, str, str]]:
    """(task_id, created_at, task_name, final status) of every attempt written."""
    out = []
    i = 0
    for minute in MINUTES:
        for second in SECONDS:
            at = minute + timedelta(seconds=second, microseconds=250_000)
            for n, name in enumerate(NAMES):
                # Mostly finished rows (both statuses), a few still live.
                status = (SUCCESS, FAILED, SUCCESS, FAILED, PENDING, SUCCESS, RUNNING)[(i + n) % 7]
                out.append((f"exact-{i}-{n}", at, name, status))
            i += 1
    return out


def _log_row(task_id: str, at: datetime, name: str, status: str) -> LogRow:
    row = log_row(task_id, 1, name, PENDING, created_at=at.timestamp())
    if status != PENDING:
        row[STATUS] = status
        row[STARTED_AT] = at.timestamp() + 0.5
    if status in (SUCCESS, FAILED):
        row[COMPLETED_AT] = at.timestamp() + 1.0
        row[DURATION_MS] = 500.0
        if status == FAILED:
            row[ERROR_MESSAGE] = "ValueError: boom"
    return row


async def _write(url: str, attempts: list[tuple[str, datetime, str, str]]) -> None:
    """Through the production row store: first every attempt's PENDING row (as
    the sender writes it), then the workers' results in a few batches (the
    upsert that finishes a row rolls it up)."""
    engine = make_engine(url)
    store = SqliteRowStore(engine) if is_sqlite(url) else PostgresRowStore(engine)
    try:
        await store.write([_log_row(t, at, n, PENDING) for t, at, n, _ in attempts], NOW)
        results = [_log_row(t, at, n, s) for t, at, n, s in attempts if s != PENDING]
        for k in range(0, len(results), 17):
            await store.write(results[k : k + 17], NOW + timedelta(seconds=k))
    finally:
        await store.close()


async def _log_counts(
    conn: AsyncConnection, lo: datetime | None = None, hi: datetime | None = None
) -> Counter[tuple[str, str]]:
    query = select(LOG.task_name, LOG.status, func.count()).group_by(LOG.task_name, LOG.status)
    query = query.where(LogFilter(lo=lo, hi=hi).where())
    return Counter({(n, s): int(c) for n, s, c in (await conn.execute(query)).all()})


async def _rollup_sums(
    conn: AsyncConnection, model: type[TaskExecutionRollup] | type[TaskExecutionRollupHourly]
) -> Counter[tuple[str, str]]:
    query = select(model.task_name, model.status, func.sum(model.count)).group_by(
        model.task_name, model.status
    )
    return Counter({(n, s): int(c) for n, s, c in (await conn.execute(query)).all()})


async def _history_total(
    conn: AsyncConnection, name: str, status: str, lo: datetime | None, hi: datetime | None
) -> int:
    """What GET /history returns as total_count (exporter.service.history)."""
    f = LogFilter(name, status, lo, hi)
    live = await live_created_at(conn, log_filter=f, limit=100_000)
    finished = await finished_buckets(conn, spans=split(lo, hi), log_filter=f, grouped=False)
    grouped = await finished_buckets(conn, spans=split(lo, hi), log_filter=f, grouped=True)
    assert sum(b.count for b in grouped) == sum(b.count for b in finished)
    return sum(b.count for b in finished) + len(live)


# Ranges the service may be asked for: open, and with mid-minute ends on either
# side of the boundary.
RANGES: list[tuple[datetime | None, datetime | None]] = [
    (None, None),
    (CUTOFF - timedelta(hours=2), None),
    (None, NOW),
    (CUTOFF - timedelta(hours=3, seconds=5), CUTOFF + timedelta(hours=1, minutes=3, seconds=40)),
    (CUTOFF - timedelta(minutes=1), CUTOFF + timedelta(minutes=20)),
    (BOUNDARY, BOUNDARY + timedelta(hours=1)),
]


async def _assert_exact(url: str) -> Counter[tuple[str, str]]:
    """Every count the service can read equals the log's; returns the log's."""
    engine = make_engine(url)
    try:
        async with snapshot(engine) as conn:
            log = await _log_counts(conn)
            finished = Counter({k: n for k, n in log.items() if k[1] in (SUCCESS, FAILED)})
            minutes = await _rollup_sums(conn, TaskExecutionRollup)
            hours = await _rollup_sums(conn, TaskExecutionRollupHourly)
            assert minutes == finished, "minute rollups != log"
            assert hours == finished, "hourly rollups != log"
            # The hourly level is the sum of its minutes, hour by hour (a partial
            # hour after retention included).
            m, h = TaskExecutionRollup, TaskExecutionRollupHourly
            per_hour: Counter[tuple[datetime, str, str]] = Counter()
            for bucket, name, status, count in await conn.execute(
                select(m.bucket_start, m.task_name, m.status, m.count)
            ):
                per_hour[(bucket.replace(minute=0), name, status)] += count
            hourly = {
                (b, n, s): c
                for b, n, s, c in await conn.execute(
                    select(h.bucket_start, h.task_name, h.status, h.count)
                )
            }
            assert hourly == dict(per_hour)
            for lo, hi in RANGES:
                in_range = await _log_counts(conn, lo, hi)
                for name in NAMES:
                    for status in STATUSES:
                        got = await _history_total(conn, name, status, lo, hi)
                        assert got == in_range[(name, status)], (
                            f"history total_count {name} {status} [{lo}, {hi}): "
                            f"{got} != {in_range[(name, status)]} rows in the log"
                        )
                if lo is not None and hi is not None:
                    totals = await task_totals(conn, lo=lo, hi=hi)
                    summary = Counter({k: t.count for k, t in totals.items() if t.count})
                    assert summary == in_range, f"metrics totals [{lo}, {hi})"
        return log
    finally:
        await engine.dispose()


async def _left(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set((await conn.execute(select(LOG.task_id))).scalars())
    finally:
        await engine.dispose()


async def test_retention_mid_minute_keeps_every_count_exact(store_url: str) -> None:
    attempts = _rows()
    await _write(store_url, attempts)
    before = await _assert_exact(store_url)
    assert sum(before.values()) == len(attempts)

    engine = make_engine(store_url)
    try:
        deleted = (await retention.prune(engine, days=DAYS, batch_rows=7, now=NOW)).rows
    finally:
        await engine.dispose()

    after = await _assert_exact(store_url)
    # Exactly the rows before the cutoff's minute left; the boundary minute's rows
    # before the cutoff (:10, :29) stay with their rollup.
    expected = {t for t, at, _, _ in attempts if at >= BOUNDARY}
    assert any(BOUNDARY <= at < CUTOFF for t, at, _, _ in attempts if t in expected)
    assert await _left(store_url) == expected
    assert deleted == len(attempts) - len(expected)
    assert sum(after.values()) == len(expected)

    # A later run whose cutoff falls mid-minute again (and mid-hour) stays exact,
    # leaving a partial hour 10:00 in the hourly rollups; a repeat deletes nothing.
    later = NOW + timedelta(minutes=1, seconds=40)  # cutoff 10:49:10 -> 10:49
    engine = make_engine(store_url)
    try:
        await retention.prune(engine, days=DAYS, batch_rows=5, now=later)
        assert (await retention.prune(engine, days=DAYS, batch_rows=5, now=later)).rows == 0
    finally:
        await engine.dispose()
    boundary = datetime(2026, 3, 1, 10, 49, tzinfo=UTC)
    assert await _left(store_url) == {t for t, at, _, _ in attempts if at >= boundary}
    await _assert_exact(store_url)
