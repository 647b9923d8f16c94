"""The retried attempts' column and counts: the upgrade that adds them marks the
failed rows already stored, and a PostgreSQL writer keeps writing on either side
of it (workers upgraded before or after `db upgrade`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Table, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.rows import log_row
from exporter.store import migrate, retried
from exporter.store.counts import Totals, task_totals
from exporter.store.engine import make_engine
from exporter.store.models import (
    TaskExecutionLog,
    TaskExecutionRollup,
    TaskExecutionRollupHourly,
)
from exporter.store.pg_writer import PostgresRowStore
from tests.helpers.rows import stored_row
from tests.test_cli import cli

pytestmark = pytest.mark.integration
BEFORE = "0005"
LOG: Table = TaskExecutionLog.__table__  # type: ignore[assignment]
MINUTES: Table = TaskExecutionRollup.__table__  # type: ignore[assignment]
HOURS: Table = TaskExecutionRollupHourly.__table__  # type: ignore[assignment]


def _history(now: datetime) -> list[dict[str, Any]]:
    """r1 failed twice, then succeeded; r2 failed once (final); s1 succeeded; r3
    failed, and its retry is pending."""
    steps = {
        ("app:flaky", "r1"): [("failed", 50), ("failed", 40), ("success", 30)],
        ("app:flaky", "r2"): [("failed", 20)],
        ("app:flaky", "r3"): [("failed", 12), ("pending", 11)],
        ("app:steady", "s1"): [("success", 10)],
    }
    rows = []
    for (name, task_id), attempts in steps.items():
        for attempt, (status, ago) in enumerate(attempts, start=1):
            row = stored_row(
                task_name=name,
                task_id=task_id,
                attempt=attempt,
                status=status,
                created_at=now - timedelta(minutes=ago),
            )
            del row["retried"]  # not a column before the upgrade
            rows.append(row)
    return rows


async def _insert_before(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Rows and their minute rollups as a writer at the earlier revision wrote them."""
    await conn.execute(LOG.insert(), rows)
    sums: dict[tuple[datetime, str, str], list[float]] = {}
    for row in rows:
        if row["status"] in ("success", "failed"):
            key = (
                row["created_at"].replace(second=0, microsecond=0),
                row["task_name"],
                row["status"],
            )
            acc = sums.setdefault(key, [0, 0.0])
            acc[0] += 1
            acc[1] += row["duration_ms"]
    columns = ("bucket_start", "task_name", "status", "count", "duration_ms_sum")
    await conn.execute(
        MINUTES.insert(),
        [dict(zip(columns, (*key, int(c), d), strict=True)) for key, (c, d) in sums.items()],
    )


async def _rollup_retried(conn: AsyncConnection, table: Table) -> dict[str, int]:
    c = table.c
    query = select(c.task_name, func.sum(c.retried)).group_by(c.task_name)
    return {name: int(n) for name, n in (await conn.execute(query)).all() if n}


async def test_the_upgrade_marks_and_counts_the_retried_failures(any_url: str) -> None:
    await migrate.upgrade(any_url, BEFORE)
    now = datetime.now(UTC)
    engine = make_engine(any_url)
    try:
        async with engine.begin() as conn:
            await _insert_before(conn, _history(now))
        if engine.dialect.name == "postgresql":
            # After the migration, `db upgrade` marks the stored rows day by day.
            run = cli("db", "upgrade", "--database-url", any_url)
            assert run.returncode == 0, run.stderr
            assert (
                "marked the 4 failed attempts stored before retries were recorded: 3 were retried"
            ) in run.stdout
            assert await retried.backfill(engine) == (0, 0)  # nothing left: counted once
        else:
            await migrate.upgrade(any_url)  # the migration marks them
        async with engine.connect() as conn:
            query = select(LOG.c.task_id, LOG.c.attempt, LOG.c.retried)
            marked = {(t, a): r for t, a, r in (await conn.execute(query)).all()}
            minutes = await _rollup_retried(conn, MINUTES)
            hours = await _rollup_retried(conn, HOURS)
            totals = await task_totals(conn, lo=now - timedelta(hours=2), hi=now)
        assert marked == {
            ("r1", 1): True,
            ("r1", 2): True,
            ("r1", 3): None,
            ("r2", 1): False,
            ("r3", 1): True,
            ("r3", 2): None,
            ("s1", 1): None,
        }
        assert minutes == hours == {"app:flaky": 3}
        assert totals[("app:flaky", "failed")] == Totals(count=4, duration_ms=40.0, retried=3)
        assert totals[("app:steady", "success")].retried == 0

        await migrate.downgrade(any_url, BEFORE)
        async with engine.connect() as conn:
            left = await conn.run_sync(
                lambda sync: {
                    t: {c["name"] for c in inspect(sync).get_columns(t)}
                    for t in (LOG.name, MINUTES.name, HOURS.name)
                }
            )
            hourly = (await conn.execute(select(func.sum(HOURS.c.count)))).scalar_one()
        assert all("retried" not in columns for columns in left.values()), left
        assert hourly == 6  # the hourly trigger of the earlier revision is back, counts kept
    finally:
        await engine.dispose()


def _finished(task_id: str, attempt: int, *, retried: bool | None, at: float) -> list[Any]:
    status = "failed" if retried is not None else "success"
    return log_row(
        task_id,
        attempt,
        "app:flaky",
        status,
        completed_at=at + 1,
        duration_ms=1000.0,
        retried=retried,
        created_at=at,
    )


async def test_a_writer_keeps_writing_across_the_upgrade(pg_url: str) -> None:
    """Workers upgraded first write without the column; once the database is
    upgraded, a new connection of the same writer writes it."""
    await migrate.upgrade(pg_url, BEFORE)
    store = PostgresRowStore(make_engine(pg_url), publish_events=False)
    at = datetime.now(UTC).timestamp() - 60
    try:
        await store.write([_finished("w1", 1, retried=True, at=at)], datetime.now(UTC))
        await store.close()
        await migrate.upgrade(pg_url)
        await retried.backfill(store.engine)
        store = PostgresRowStore(make_engine(pg_url), publish_events=False)
        await store.write(
            [
                _finished("w1", 2, retried=True, at=at + 2),
                _finished("w1", 3, retried=False, at=at + 4),
                _finished("w2", 1, retried=None, at=at + 6),
            ],
            datetime.now(UTC),
        )
    finally:
        await store.close()
    engine = make_engine(pg_url)
    try:
        async with engine.connect() as conn:
            query = select(LOG.c.task_id, LOG.c.attempt, LOG.c.status, LOG.c.retried)
            stored = sorted((await conn.execute(query)).all())
            minutes = await _rollup_retried(conn, MINUTES)
            failed = (
                await conn.execute(
                    select(func.sum(MINUTES.c.count)).where(MINUTES.c.status == "failed")
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    # Before the upgrade nothing followed w1's first attempt: the upgrade could not
    # know it was retried (the column was written from then on).
    assert stored == [
        ("w1", 1, "failed", False),
        ("w1", 2, "failed", True),
        ("w1", 3, "failed", False),
        ("w2", 1, "success", None),
    ]
    assert (failed, minutes) == (3, {"app:flaky": 1})
