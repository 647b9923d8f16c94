"""SQLite (the embedded default): the same upsert with SQLite's statements, the
rollups computed here from the rows' previous states, events to an in-process hub."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exporter.events import EventHub, TaskEvent, events_from_row, rank
from exporter.rows import (
    COLUMNS,
    CREATED_AT,
    DURATION_MS,
    RETRIED,
    STATUS,
    TASK_ID,
    TASK_NAME,
    TERMINAL,
    LogRow,
    as_dict,
    row_key,
)
from exporter.store.models import UTCDateTime
from exporter.store.row_batches import (
    TIME_COLUMNS,
    coalesce_updates,
    minute,
    to_dt,
)
from exporter.text import clean_text

_TIME_BINDS = [bindparam(c, type_=UTCDateTime) for c in (*TIME_COLUMNS, "updated_at")]
UPSERT = text(
    f"INSERT INTO task_execution_logs ({', '.join(COLUMNS)}, updated_at) "  # noqa: S608 - built from constants, no input
    f"VALUES ({', '.join(':' + c for c in COLUMNS)}, :updated_at) "
    f"ON CONFLICT (task_id, attempt) DO UPDATE SET "
    f"{coalesce_updates('task_execution_logs', 'MIN')}"
).bindparams(*_TIME_BINDS)
PREVIOUS = (
    text(
        "SELECT task_id, attempt, status, created_at FROM task_execution_logs WHERE task_id IN :ids"
    )
    .bindparams(bindparam("ids", expanding=True))
    .columns(created_at=UTCDateTime)
)
ROLLUP = text(
    "INSERT INTO task_execution_rollups "
    "(bucket_start, task_name, status, count, duration_ms_sum, retried) "
    "VALUES (:bucket_start, :task_name, :status, :count, :duration_ms_sum, :retried) "
    "ON CONFLICT (bucket_start, task_name, status) DO UPDATE SET "
    "count = count + excluded.count, duration_ms_sum = duration_ms_sum + excluded.duration_ms_sum, "
    "retried = retried + excluded.retried"
).bindparams(bindparam("bucket_start", type_=UTCDateTime))
_CHUNK = 500  # stay far below SQLite's bound-variable limit


async def _previous(conn: AsyncConnection, rows: Sequence[LogRow]) -> dict[tuple[str, int], Any]:
    found: dict[tuple[str, int], Any] = {}
    ids = sorted({r[TASK_ID] for r in rows})
    for i in range(0, len(ids), _CHUNK):
        result = await conn.execute(PREVIOUS, {"ids": ids[i : i + _CHUNK]})
        for task_id, attempt, status, created_at in result:
            found[(task_id, attempt)] = (status, created_at)
    return found


def _rollups(rows: Sequence[LogRow], prev: dict[tuple[str, int], Any]) -> list[dict[str, Any]]:
    sums: dict[tuple[datetime, str, str], list[float]] = {}  # count, duration, retried
    for row in rows:
        before = prev.get(row_key(row))
        status = row[STATUS]
        if status not in TERMINAL or (before is not None and before[0] in TERMINAL):
            continue
        created = to_dt(row[CREATED_AT])
        assert created is not None
        if before is not None and before[1] is not None:
            created = min(created, before[1])
        acc = sums.setdefault((minute(created), row[TASK_NAME], status), [0, 0.0, 0])
        acc[0] += 1
        acc[1] += row[DURATION_MS] or 0.0
        acc[2] += 1 if row[RETRIED] else 0
    return [
        {
            "bucket_start": b,
            "task_name": n,
            "status": s,
            "count": c,
            "duration_ms_sum": d,
            "retried": r,
        }
        for (b, n, s), (c, d, r) in sums.items()
    ]


def _value(column: str, value: Any) -> Any:
    return to_dt(value) if column in TIME_COLUMNS else value


def _clean(row: LogRow) -> LogRow:
    # sqlite3 cannot encode lone surrogates (a producer's odd task id): one such
    # row would block every batch.
    return [clean_text(v) if isinstance(v, str) else v for v in row]


class SqliteRowStore:
    def __init__(self, engine: AsyncEngine, *, hub: EventHub | None = None) -> None:
        self.engine = engine
        self.hub = hub
        # How far each recent attempt has been reported (bounded, oldest forgotten).
        self._reported: dict[tuple[str, int], int] = {}

    def _events(self, rows: Sequence[LogRow], now: datetime) -> list[TaskEvent]:
        events: list[TaskEvent] = []
        for row in rows:
            key = row_key(row)
            done = self._reported.pop(key, -1)
            fields = as_dict(row)
            for c in TIME_COLUMNS:
                fields[c] = to_dt(fields[c])
            fields["updated_at"] = now
            events.extend(events_from_row(fields, done))
            self._reported[key] = max(done, rank(row[STATUS]))
        while len(self._reported) > 50_000:
            del self._reported[next(iter(self._reported))]
        return events

    async def write(self, rows: Sequence[LogRow], now: datetime) -> list[TaskEvent]:
        rows = [_clean(r) for r in rows]
        params = [
            {c: _value(c, v) for c, v in zip(COLUMNS, r, strict=True)} | {"updated_at": now}
            for r in rows
        ]
        async with self.engine.begin() as conn:
            prev = await _previous(conn, rows)
            await conn.execute(UPSERT, params)
            rollups = _rollups(rows, prev)
            if rollups:
                await conn.execute(ROLLUP, rollups)
        if self.hub is None:
            return []
        events = self._events(rows, now)
        self.hub.publish(events)
        return events

    async def close(self) -> None:
        await self.engine.dispose()
