"""The hourly rollups stay equal to the sum of the minute rollups (triggers), through
inserts, upserts and deletes, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select

from exporter.store.engine import make_engine
from exporter.store.models import TaskExecutionRollup, TaskExecutionRollupHourly
from tests.helpers.rows import insert_logs, stored_row

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


async def hourly_vs_minutes(
    url: str, *, retried: bool = True
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The hourly rollups, and what the minute rollups sum to per hour (with the
    retried counts, unless the schema predates them)."""
    m, h = TaskExecutionRollup, TaskExecutionRollupHourly
    sums_of = ("count", "duration_ms_sum", "retried") if retried else ("count", "duration_ms_sum")
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            key = (h.bucket_start, h.task_name, h.status)
            hours = (
                await conn.execute(select(*key, *(getattr(h, c) for c in sums_of)).order_by(*key))
            ).all()
            minutes = (
                await conn.execute(
                    select(m.bucket_start, m.task_name, m.status, *(getattr(m, c) for c in sums_of))
                )
            ).all()
    finally:
        await engine.dispose()
    sums: dict[tuple[datetime, str, str], list[float]] = {}
    for bucket, name, status, *values in minutes:
        acc = sums.setdefault((bucket.replace(minute=0), name, status), [0.0] * len(sums_of))
        for i, value in enumerate(values):
            acc[i] += value
    expected = [
        (*k, int(v[0]), pytest.approx(v[1]), *(int(x) for x in v[2:]))
        for k, v in sorted(sums.items())
    ]
    return [tuple(r) for r in hours], expected


async def test_hourly_follows_minutes(store_url: str) -> None:
    rows = [
        stored_row(
            task_name=name,
            status=status,
            created_at=T0 + timedelta(minutes=7 * i),
            duration_ms=float(i),
            retried=i % 3 == 0 if status == "failed" else None,
        )
        for i in range(40)
        for name, status in (("a", "success"), ("b", "failed"))
    ]
    await insert_logs(store_url, rows[:50])
    await insert_logs(store_url, rows[50:])  # upserts into existing minutes and hours
    got, expected = await hourly_vs_minutes(store_url)
    assert got == expected
    assert sum(r[3] for r in got) == 80  # type: ignore[misc]
    engine = make_engine(store_url)
    try:
        async with engine.begin() as conn:  # what retention does
            await conn.execute(
                delete(TaskExecutionRollup).where(
                    TaskExecutionRollup.bucket_start < T0 + timedelta(hours=2, minutes=30)
                )
            )
            left = (await conn.execute(select(func.sum(TaskExecutionRollupHourly.count)))).scalar()
    finally:
        await engine.dispose()
    got, expected = await hourly_vs_minutes(store_url)
    assert got == expected
    assert left == sum(r[3] for r in got)  # type: ignore[misc]
    assert all(r[3] > 0 for r in got)  # type: ignore[operator]
