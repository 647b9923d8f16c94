"""Rows as the writer stores them, and inserting them (with their minute rollups)
straight into a store, for tests of what the service reads."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Table, inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from exporter.store.engine import make_engine
from exporter.store.models import TaskExecutionLog, TaskExecutionRollup


def stored_row(
    *,
    task_name: str = "app:task",
    status: str = "success",
    created_at: datetime,
    task_id: str | None = None,
    attempt: int = 1,
    duration_ms: float | None = 10.0,
    error_message: str | None = None,
    error_traceback: str | None = None,
    params: object = None,
    updated_at: datetime | None = None,
    retried: bool | None = None,
) -> dict[str, object]:
    """A task_execution_logs row as the writer would store it (``retried``: a
    failed attempt that a retry middleware sent again; False for other failures)."""
    finished = status in ("success", "failed")
    return {
        "task_name": task_name,
        "status": status,
        "task_id": task_id or uuid.uuid4().hex,
        "attempt": attempt,
        "params": params if params is not None else {"args": [1], "kwargs": {}},
        "queued_at": created_at,
        "started_at": created_at if status != "pending" else None,
        "completed_at": created_at + timedelta(milliseconds=duration_ms or 0) if finished else None,
        "duration_ms": duration_ms if finished else None,
        "queue_wait_ms": 1.0,
        "error_message": error_message,
        "error_traceback": error_traceback,
        "worker_host": "host-1",
        "worker_pid": 4242,
        "retried": retried if retried is not None else (False if status == "failed" else None),
        "created_at": created_at,
        "updated_at": updated_at or created_at,
    }


async def insert_logs(url: str, rows: list[dict[str, object]]) -> None:
    """Insert rows and their minute rollups in one transaction, as the writer does
    (the hourly rollups follow through the triggers)."""
    engine = make_engine(url)
    sums: dict[tuple[datetime, str, str], list[float]] = {}
    for row in rows:
        if row["status"] in ("success", "failed"):
            created = row["created_at"]
            assert isinstance(created, datetime)
            key = (
                created.replace(second=0, microsecond=0),
                str(row["task_name"]),
                str(row["status"]),
            )
            acc = sums.setdefault(key, [0, 0.0, 0])
            acc[0] += 1
            acc[1] += float(row["duration_ms"] or 0.0)  # type: ignore[arg-type]
            acc[2] += 1 if row.get("retried") else 0
    rollups = [
        {
            "bucket_start": b,
            "task_name": n,
            "status": s,
            "count": int(c),
            "duration_ms_sum": d,
            "retried": int(r),
        }
        for (b, n, s), (c, d, r) in sorted(sums.items())
    ]
    insert = pg_insert if url.startswith("postgresql") else sqlite_insert
    table: Table = TaskExecutionRollup.__table__  # type: ignore[assignment]
    logs: Table = TaskExecutionLog.__table__  # type: ignore[assignment]
    try:
        async with engine.begin() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns(logs.name)}
            )
            if "retried" not in columns:  # a schema from before the retried counts
                rows = [{k: v for k, v in row.items() if k != "retried"} for row in rows]
                for rollup in rollups:
                    del rollup["retried"]
            if rows:
                await conn.execute(logs.insert(), rows)
            if rollups:
                stmt = insert(table)
                sums_of = [c for c in ("count", "duration_ms_sum", "retried") if c in rollups[0]]
                stmt = stmt.on_conflict_do_update(
                    index_elements=["bucket_start", "task_name", "status"],
                    set_={c: table.c[c] + stmt.excluded[c] for c in sums_of},
                )
                await conn.execute(stmt, rollups)
    finally:
        await engine.dispose()
