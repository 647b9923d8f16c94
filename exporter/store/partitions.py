"""Time partitions of the execution log on PostgreSQL.

The log is range-partitioned on ``created_at``: a partition per interval (a day by
default), made ahead of time by the maintenance job and by ``db upgrade``, and
dropped whole by retention. ``created_at`` is part of the row's key: the sender's
PENDING row and the worker's rows of one attempt carry the same ``created_at``
(the send time the sender stamps), so they meet in one row of one partition.

A DEFAULT partition takes any row no partition covers (a sender's clock far off,
a message that waited longer than the retention, a day the maintenance has not
made yet): a write never fails for its time. Making a partition first moves the
rows the default holds for its range into it, in the same transaction.

PostgreSQL refuses ``DETACH PARTITION ... CONCURRENTLY`` while a default partition
exists, so a partition is dropped in one short transaction under a lock timeout
(it needs the table's exclusive lock for a moment): behind a long reader it gives
up and the next run tries again, instead of queueing every writer behind it.

An installation from before partitioning keeps its old table as the partition
``task_execution_logs_legacy``, from the beginning of time to the first
partition; retention deletes from it in batches until it can drop it whole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

logger = logging.getLogger(__name__)

LOG_TABLE = "task_execution_logs"
DEFAULT_PARTITION = f"{LOG_TABLE}_default"
LEGACY_PARTITION = f"{LOG_TABLE}_legacy"
# Long enough for a writer's batch to finish, short enough that writers queued
# behind the DDL's lock request wait no longer than this.
LOCK_TIMEOUT = "2s"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INSUFFICIENT_PRIVILEGE = "42501"
LOCK_NOT_AVAILABLE = "55P03"

# The bounds of every partition of the log: pg_get_expr prints them as
# FOR VALUES FROM ('...') TO ('...'), MINVALUE unquoted, or DEFAULT; the
# timestamps are read back with the same session settings that printed them.
_PARTITIONS = text(
    r"""
    SELECT c.relname,
           pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']*)''\)'))[1]
               ::timestamptz,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']*)''\)'))[1]
               ::timestamptz,
           pg_total_relation_size(c.oid)
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = to_regclass(:table)
    """
)


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition of the log: ``[lo, hi)`` of ``created_at``; None is open
    (MINVALUE, MAXVALUE, or the default partition, which has no range)."""

    name: str
    lo: datetime | None
    hi: datetime | None
    default: bool
    size_bytes: int

    def describe(self) -> str:
        if self.default:
            return f"{self.name} (default)"
        lo = "the beginning" if self.lo is None else f"{self.lo:%Y-%m-%d %H:%M}"
        hi = "the end" if self.hi is None else f"{self.hi:%Y-%m-%d %H:%M}"
        return f"{self.name} [{lo}, {hi}) {self.size_bytes / 2**20:.1f} MiB"


def floor_to(at: datetime, hours: int) -> datetime:
    """The start of the ``hours``-long interval ``at`` falls in, counted from the epoch."""
    step = hours * 3600
    seconds = (at - EPOCH) // timedelta(seconds=1)
    return EPOCH + timedelta(seconds=seconds - seconds % step)


def partition_name(lo: datetime, hours: int) -> str:
    day = hours % 24 == 0 and lo.hour == 0
    return f"{LOG_TABLE}_p{lo:%Y%m%d}" if day else f"{LOG_TABLE}_p{lo:%Y%m%d%H}"


def planned(start: datetime, until: datetime, hours: int) -> Iterator[tuple[datetime, datetime]]:
    """Ranges from ``start`` until one covers ``until``, each ending on a multiple of
    ``hours`` since the epoch (the first is shorter when the interval changed)."""
    lo = start
    while lo <= until:
        hi = floor_to(lo, hours) + timedelta(hours=hours)
        yield lo, hi
        lo = hi


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)


def _literal(at: datetime) -> str:
    return "'" + at.astimezone(UTC).isoformat() + "'"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _kind(conn: AsyncConnection) -> str | None:
    """The log's relkind: 'p' partitioned, 'r' one table, None missing."""
    kind = await conn.scalar(
        text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(:t)"), {"t": LOG_TABLE}
    )
    return None if kind is None else str(kind)


async def is_partitioned(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql" and await _kind(conn) == "p"


async def partitions(conn: AsyncConnection) -> list[Partition]:
    """The log's partitions, oldest first, the default last."""
    rows = (await conn.execute(_PARTITIONS, {"table": LOG_TABLE})).all()
    found = [
        Partition(name, lo, None if default else hi, bool(default), int(size))
        for name, default, lo, hi, size in rows
    ]
    never = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda p: (p.default, p.hi or never))


async def ensure(
    engine: AsyncEngine,
    *,
    interval_hours: int,
    ahead_hours: float,
    keep_days: float,
    now: datetime | None = None,
) -> list[Partition]:
    """Make the partitions from the newest one (or from now) until ``ahead_hours``
    from now. A gap older than the retention is not filled: its rows, if any, stay
    in the default partition until retention deletes them. Returns what it made."""
    now = now or datetime.now(UTC)
    made: list[Partition] = []
    async with engine.connect() as conn:
        if not await is_partitioned(conn):
            return made
        existing = await partitions(conn)
        ends = [p.hi for p in existing if not p.default and p.hi is not None]
        start = max(ends, default=floor_to(now, interval_hours))
        start = max(start, floor_to(now - timedelta(days=keep_days), interval_hours))
        has_default = any(p.default for p in existing)
        await conn.commit()
        for lo, hi in planned(start, now + timedelta(hours=ahead_hours), interval_hours):
            name = partition_name(lo, interval_hours)
            await _make(conn, name, lo, hi, has_default)
            made.append(Partition(name, lo, hi, False, 0))
    return made


async def _make(
    conn: AsyncConnection, name: str, lo: datetime, hi: datetime, has_default: bool
) -> None:
    # Made apart, then attached: ATTACH needs only a lock that lets readers and
    # writers of the log go on, where CREATE TABLE ... PARTITION OF would block them.
    async with conn.begin():
        await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        table = _quoted(name)
        await conn.execute(text(f"CREATE TABLE {table} (LIKE {LOG_TABLE} INCLUDING DEFAULTS)"))
        bounds = f"created_at >= {_literal(lo)} AND created_at < {_literal(hi)}"
        if has_default:
            await conn.execute(
                text(
                    f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE {bounds} RETURNING *)"
                    f" INSERT INTO {table} SELECT * FROM moved"
                )
            )
        await conn.execute(
            text(
                f"ALTER TABLE {LOG_TABLE} ATTACH PARTITION {table} "
                f"FOR VALUES FROM ({_literal(lo)}) TO ({_literal(hi)})"
            )
        )


async def drop(conn: AsyncConnection, partition: Partition) -> None:
    """Drop one partition whose rows are all older than the retention, with the
    default partition's rows and the rollup minutes before its end: the log and
    the rollups are cut on one boundary, in one transaction."""
    assert partition.hi is not None, "the default partition is not dropped"
    async with conn.begin():
        await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        await conn.execute(text(f"DROP TABLE {_quoted(partition.name)}"))
        end = {"end": partition.hi}
        await conn.execute(
            text(f"DELETE FROM {DEFAULT_PARTITION} WHERE created_at < :end"), end
        )  # the default partition always exists with the partitioned table
        await conn.execute(
            text("DELETE FROM task_execution_rollups WHERE bucket_start < :end"), end
        )


def retention_cut(existing: list[Partition], boundary: datetime) -> datetime:
    """Where the log is actually cut: at ``boundary`` when it falls in the legacy
    partition or in no partition, else at the start of the partition it falls in
    (that partition waits until it can be dropped whole)."""
    for p in existing:
        if p.default or p.lo is None:
            continue
        if p.lo <= boundary < (p.hi or boundary + timedelta(seconds=1)):
            return p.lo
    return boundary


async def drop_expired(engine: AsyncEngine, boundary: datetime) -> tuple[datetime, list[Partition]]:
    """Drop every partition that ends at or before the retention cut. Returns the
    cut (see :func:`retention_cut`) and the partitions dropped."""
    dropped: list[Partition] = []
    async with engine.connect() as conn:
        if not await is_partitioned(conn):
            return boundary, dropped
        existing = await partitions(conn)
        await conn.commit()
        cut = retention_cut(existing, boundary)
        for partition in existing:
            if partition.default or partition.hi is None or partition.hi > cut:
                continue
            try:
                await drop(conn, partition)
            except DBAPIError as exc:
                if sqlstate(exc) == INSUFFICIENT_PRIVILEGE:
                    logger.warning(
                        "taskiq-exporter: this role may not drop the log's partitions (only "
                        "its owner may): rows older than the retention are deleted row by "
                        "row instead; run `taskiq-exporter db prune` as the owner"
                    )
                    return cut, dropped
                raise
            dropped.append(partition)
    for partition in dropped:
        logger.info("taskiq-exporter: retention dropped %s", partition.describe())
    return cut, dropped


# The keys the partitioning migration gives an old table with rows; built here
# beforehand, concurrently, while the workers write: the migration then only
# swaps tables under its lock instead of building them there.
LEGACY_KEYS = (
    (f"{LEGACY_PARTITION}_pkey", "id, created_at"),
    (f"{LEGACY_PARTITION}_key", "task_id, attempt, created_at"),
)


async def prepare_upgrade(engine: AsyncEngine) -> bool:
    """Build the partitioning migration's keys on an unpartitioned log with rows.
    Returns whether it built anything."""
    async with engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            return False
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if await _kind(conn) != "r":
            return False
        if not await conn.scalar(text(f"SELECT EXISTS (SELECT 1 FROM {LOG_TABLE})")):
            return False
        for name, columns in LEGACY_KEYS:
            valid = await conn.scalar(
                text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:i)"),
                {"i": name},
            )
            if valid is False:  # left behind by an interrupted build
                await conn.execute(text(f"DROP INDEX CONCURRENTLY {name}"))
            build = f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {name}"
            await conn.execute(text(f"{build} ON {LOG_TABLE} ({columns})"))
        return True
