"""Adding finished attempts to the per-minute rollups from maintenance jobs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.store.models import TaskExecutionRollup


async def add_finished(
    conn: AsyncConnection, finished: Iterable[tuple[datetime, str, str, float | None]]
) -> None:
    """``finished``: (created_at, task_name, status, duration_ms) of rows that just
    became terminal, in the caller's transaction (no duration counts as 0, as the
    writer's rollups do)."""
    sums: dict[tuple[datetime, str, str], list[float]] = {}
    for created_at, task_name, status, duration_ms in finished:
        key = (created_at.replace(second=0, microsecond=0), task_name, status)
        acc = sums.setdefault(key, [0, 0.0])
        acc[0] += 1
        acc[1] += duration_ms or 0.0
    if not sums:
        return
    values = [
        {"bucket_start": b, "task_name": n, "status": s, "count": int(c), "duration_ms_sum": d}
        for (b, n, s), (c, d) in sums.items()
    ]
    table = TaskExecutionRollup.__table__
    insert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert
    stmt = insert(table).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["bucket_start", "task_name", "status"],
        set_={
            "count": table.c.count + stmt.excluded.count,
            "duration_ms_sum": table.c.duration_ms_sum + stmt.excluded.duration_ms_sum,
        },
    )
    await conn.execute(stmt)
