"""PostgreSQL: one statement per batch (upsert, and rollups when it finishes rows)
and a NOTIFY of the batch's stamp, in one transaction.

The batch travels as one JSON text parameter that the server unpacks: orjson
encodes it far faster than the driver encodes fifteen typed arrays, and the
unpacking runs on the database's core. It is cast to jsonb, parsed once: as
json, every ``e->>i`` would parse the row again, on server CPU that a small host
shares with its workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exporter.events import PG_CHANNEL, TaskEvent
from exporter.rows import COLUMNS, STATUS, TERMINAL, LogRow
from exporter.store.row_batches import TERMINAL_SQL, TIME_COLUMNS, coalesce_updates
from exporter.text import clean_text

_CASTS = {
    "attempt": "int",
    "worker_pid": "int",
    "duration_ms": "float8",
    "queue_wait_ms": "float8",
    "retried": "boolean",
    **{c: "float8" for c in TIME_COLUMNS},
}


def _field(i: int, col: str) -> str:
    if col == "params":
        return f"(e->>{i})::jsonb"
    if col in TIME_COLUMNS:
        return f"to_timestamp((e->>{i})::float8)"
    return f"(e->>{i})::{_CASTS.get(col, 'text')}"


_status = itemgetter(STATUS)

# One statement, sent on its own (autocommit: its implicit transaction is the
# batch's): four round trips (BEGIN, upsert, NOTIFY, COMMIT) through SQLAlchemy
# would cost the worker more CPU per batch than the rows themselves at a worker's
# pace of a few dozen rows per flush.
# $1 the batch (JSON text), $2 its updated_at stamp, $3 the NOTIFY channel,
# $4 the stamp as the listeners parse it (ISO 8601).
_UPSERT = """
WITH batch_rows AS (
    SELECT {fields} FROM jsonb_array_elements(CAST($1 AS text)::jsonb) AS e
),
up AS (
    INSERT INTO task_execution_logs AS t ({cols}, updated_at)
    SELECT {cols}, $2::timestamptz FROM batch_rows
    ON CONFLICT ({key}) DO UPDATE SET {updates}"""
_ROLLUPS = f"""
    RETURNING t.task_name, t.status, t.created_at, t.duration_ms, t.updated_at{{returned}}
),
rolled_up AS (
    INSERT INTO task_execution_rollups AS r
        (bucket_start, task_name, status, count, duration_ms_sum{{columns}})
    SELECT date_trunc('minute', created_at), task_name, status, count(*),
           COALESCE(sum(duration_ms), 0){{counted}}
    FROM up
    -- Finished by this statement: a row that was finished already keeps its
    -- updated_at (see coalesce_updates), so a late PENDING write or a repeated
    -- terminal write meeting it, even one racing it, counts nothing. This needs no
    -- join with the batch (a join of CTEs becomes a nested loop: O(n^2) per batch).
    WHERE status IN {TERMINAL_SQL} AND updated_at = $2::timestamptz
    GROUP BY 1, 2, 3
    -- One lock order for every writer (and the hourly trigger after it): no deadlocks.
    ORDER BY 2, 3, 1
    ON CONFLICT (bucket_start, task_name, status) DO UPDATE
    SET count = r.count + excluded.count,
        duration_ms_sum = r.duration_ms_sum + excluded.duration_ms_sum{{summed}}
)"""  # noqa: S608 - built from constants, no input
# The retried attempts' count, on a schema that has it.
_RETRIED_ROLLUP = {
    "returned": ", t.retried",
    "columns": ", retried",
    "counted": ", count(*) FILTER (WHERE retried)",
    "summed": ",\n        retried = r.retried + excluded.retried",
}
_NO_RETRIED_ROLLUP = dict.fromkeys(_RETRIED_ROLLUP, "")
# One tiny notification per batch, delivered at commit: its updated_at. Listeners
# read the rows written with that stamp (indexed) and derive the events
# (exporter.events).
_NOTIFY = "\nSELECT pg_notify($3::text, $4::text)"
_NO_NOTIFY = "\nSELECT $3::text, $4::text"


@dataclass(frozen=True, slots=True)
class Statements:
    """The writer's statements for one table layout: with and without the
    rollups (a batch with no finished row, a sender's PENDING rows, can finish
    nothing, and the rollups' statement-level triggers would still fire, empty),
    with and without the NOTIFY."""

    finishing: str
    pending: str

    @classmethod
    def build(cls, *, partitioned: bool, notify: bool, retried: bool = True) -> Statements:
        # A partitioned log's unique key holds its partition key, created_at: the
        # sender's and the worker's rows of an attempt carry the same one.
        key = "task_id, attempt, created_at" if partitioned else "task_id, attempt"
        least = None if partitioned else "LEAST"
        # A schema older than this code (workers upgraded before `db upgrade`)
        # lacks the retried column: its rows are written without it.
        skipped = frozenset() if retried else frozenset({"retried"})
        columns = [(i, c) for i, c in enumerate(COLUMNS) if c not in skipped]
        upsert = _UPSERT.format(
            fields=", ".join(f"{_field(i, c)} AS {c}" for i, c in columns),
            cols=", ".join(c for _, c in columns),
            key=key,
            updates=coalesce_updates("t", least, skipped=skipped),
        )
        rollups = _ROLLUPS.format(**(_RETRIED_ROLLUP if retried else _NO_RETRIED_ROLLUP))
        tail = _NOTIFY if notify else _NO_NOTIFY
        return cls(finishing=upsert + rollups + tail, pending=upsert + "\n)" + tail)


# The layout the statements depend on: whether the log is partitioned, and
# whether it has the retried column (the rollups gain theirs in the same revision).
_LAYOUT = """
SELECT c.relkind = 'p',
       EXISTS (SELECT FROM pg_attribute AS a
               WHERE a.attrelid = c.oid AND a.attname = 'retried' AND NOT a.attisdropped)
FROM pg_class AS c WHERE c.oid = to_regclass('task_execution_logs')
"""


async def statements_for(driver: Any, *, notify: bool) -> Statements:
    """The statements for the layout of the database an asyncpg connection is on."""
    layout = await driver.fetchrow(_LAYOUT)
    partitioned, retried = (bool(layout[0]), bool(layout[1])) if layout else (False, True)
    return Statements.build(partitioned=partitioned, notify=notify, retried=retried)


def encode_batch(rows: Sequence[LogRow]) -> str:
    """Rows are lists in COLUMNS order; params is already JSON text and travels
    as a string that the server casts to jsonb."""
    try:
        return orjson.dumps(rows).decode()
    except orjson.JSONEncodeError:
        # A task id or name that is not valid UTF-8: clean the strings, never fail.
        cleaned = [[clean_text(v) if isinstance(v, str) else v for v in row] for row in rows]
        return orjson.dumps(cleaned).decode()


class PostgresRowStore:
    """Writes on one connection of its own, in autocommit mode, through the
    driver: no pool checkout, pre-ping or SQLAlchemy round trip per batch. A
    failed batch closes it; the next batch opens a new one."""

    def __init__(self, engine: AsyncEngine, *, publish_events: bool = True) -> None:
        self.engine = engine
        self.publish_events = publish_events
        self.statements = Statements.build(partitioned=False, notify=publish_events)
        self._conn: AsyncConnection | None = None
        self._driver: Any = None

    async def _connect(self) -> Any:
        conn = await self.engine.connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            raw = await conn.get_raw_connection()
        except BaseException:
            await conn.close()
            raise
        self._conn, self._driver = conn, raw.driver_connection
        # Read again on every new connection: a `db upgrade` that partitions the
        # log while workers write fails their batch once, and the retry finds it.
        self.statements = await statements_for(self._driver, notify=self.publish_events)
        return self._driver

    async def write(self, rows: Sequence[LogRow], now: datetime) -> list[TaskEvent]:
        batch = encode_batch(rows)
        finishes = not TERMINAL.isdisjoint(map(_status, rows))  # C loops, no generator
        driver = self._driver or await self._connect()
        statement = self.statements.finishing if finishes else self.statements.pending
        try:
            await driver.fetchval(statement, batch, now, PG_CHANNEL, now.isoformat())
        except BaseException:
            conn, self._conn, self._driver = self._conn, None, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.invalidate()
            raise
        return []

    async def server_pid(self) -> int:
        """The PostgreSQL server process this store writes through (connecting if
        needed): the benchmarks read its CPU time."""
        driver = self._driver or await self._connect()
        pid: int = driver.get_server_pid()
        return pid

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn, self._driver = None, None
        await self.engine.dispose()
