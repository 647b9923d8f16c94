"""Reads of the execution log: small async functions, keyword-only arguments; the
caller owns the connection and the transaction."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, Row, and_, func, literal_column, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exporter.rows import TaskStatus
from exporter.store.models import TaskExecutionLog

LOG = TaskExecutionLog.__table__.c
AnyRow: TypeAlias = Row[*tuple[Any, ...]]
TERMINAL = (TaskStatus.SUCCESS.value, TaskStatus.FAILED.value)
LIVE = (TaskStatus.PENDING.value, TaskStatus.RUNNING.value)
SUMMARY_COLUMNS = [c for c in TaskExecutionLog.__table__.c if c.name != "error_traceback"]
HAS_TRACEBACK = LOG.error_traceback.isnot(None).label("has_traceback")


@contextlib.asynccontextmanager
async def snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction with one snapshot for all its statements: counts from
    rollups and from live rows then agree even while writers commit."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        async with conn.begin():
            yield conn


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which rows: an exact task name, one status, ``lo <= created_at < hi``."""

    task_name: str | None = None
    status: str | None = None
    lo: datetime | None = None
    hi: datetime | None = None

    @property
    def terminal(self) -> tuple[str, ...]:
        """The finished statuses this filter admits (those the rollups hold)."""
        return TERMINAL if self.status is None else tuple(s for s in TERMINAL if s == self.status)

    @property
    def live(self) -> tuple[str, ...]:
        return LIVE if self.status is None else tuple(s for s in LIVE if s == self.status)

    def where(self, *, statuses: Sequence[str] | None = None) -> ColumnElement[bool]:
        """The filter on the log table; ``statuses`` replaces the status condition."""
        conds: list[ColumnElement[bool]] = []
        if self.task_name is not None:
            conds.append(LOG.task_name == self.task_name)
        if statuses is not None:
            conds.append(
                LOG.status.in_(statuses) if len(statuses) > 1 else LOG.status == statuses[0]
            )
        elif self.status is not None:
            conds.append(LOG.status == self.status)
        if self.lo is not None:
            conds.append(LOG.created_at >= self.lo)
        if self.hi is not None:
            conds.append(LOG.created_at < self.hi)
        return and_(true(), *conds)


def newer_than_cursor(created_at: datetime, row_id: int) -> ColumnElement[bool]:
    """Rows after (older than) a cursor in created_at DESC, id DESC order; the plain
    ``created_at <=`` lets PostgreSQL use the created_at index for the range."""
    return and_(
        LOG.created_at <= created_at,
        or_(LOG.created_at < created_at, LOG.id < row_id),
    )


async def history_rows(
    conn: AsyncConnection,
    *,
    where: ColumnElement[bool],
    limit: int,
    offset: int = 0,
) -> Sequence[AnyRow]:
    """One page, newest first, without the tracebacks (has_traceback instead)."""
    query = (
        select(*SUMMARY_COLUMNS, HAS_TRACEBACK)
        .where(where)
        .order_by(LOG.created_at.desc(), LOG.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return (await conn.execute(query)).all()


async def live_created_at(
    conn: AsyncConnection, *, log_filter: LogFilter, limit: int
) -> list[datetime]:
    """created_at of the pending/running rows the filter admits, at most ``limit``.

    The date range is applied here, not in SQL: with it the planner prefers the
    created_at index over the partial index on live rows, far slower on a large
    log; the live rows are few, so reading them all is the cheap way."""
    if not log_filter.live:
        return []
    by_name = LogFilter(task_name=log_filter.task_name)
    query = select(LOG.created_at).where(by_name.where(statuses=log_filter.live)).limit(limit)
    lo, hi = log_filter.lo, log_filter.hi
    return [
        at
        for at in (await conn.execute(query)).scalars()
        if (lo is None or at >= lo) and (hi is None or at < hi)
    ]


async def count_rows(conn: AsyncConnection, *, where: ColumnElement[bool]) -> int:
    query = select(func.count()).select_from(TaskExecutionLog.__table__).where(where)
    return int((await conn.execute(query)).scalar_one())


async def log_by_id(conn: AsyncConnection, *, log_id: int) -> AnyRow | None:
    query = select(*SUMMARY_COLUMNS, HAS_TRACEBACK, LOG.error_traceback).where(LOG.id == log_id)
    return (await conn.execute(query)).first()


async def logs_by_task_id(conn: AsyncConnection, *, task_id: str) -> Sequence[AnyRow]:
    """Every attempt of one task, newest first."""
    query = (
        select(*SUMMARY_COLUMNS, HAS_TRACEBACK, LOG.error_traceback)
        .where(LOG.task_id == task_id)
        .order_by(LOG.attempt.desc(), LOG.id.desc())
    )
    return (await conn.execute(query)).all()


async def task_names(conn: AsyncConnection, *, limit: int = 10_000) -> list[str]:
    """Distinct task names by a loose index scan: one index probe per name, so the
    cost follows the number of names, not of rows."""
    table = TaskExecutionLog.__table__
    names = select(func.min(LOG.task_name).label("name")).cte("names", recursive=True)
    inner = table.alias("inner_log")
    step = (
        select(func.min(inner.c.task_name))
        .where(inner.c.task_name > names.c.name)
        .scalar_subquery()
    )
    names = names.union_all(select(step).where(names.c.name.isnot(None)))
    query = select(names.c.name).where(names.c.name.isnot(None)).limit(limit)
    return [str(n) for n in (await conn.execute(query)).scalars()]


async def active_summary(conn: AsyncConnection) -> list[tuple[str, int, datetime | None]]:
    """(status, rows, oldest created_at) of pending and running rows (partial index)."""
    query = (
        select(LOG.status, func.count(), func.min(LOG.created_at))
        .where(LOG.status.in_(LIVE))
        .group_by(LOG.status)
    )
    rows = (await conn.execute(query)).all()
    return [(str(s), int(n), oldest) for s, n, oldest in rows]


async def ping(conn: AsyncConnection) -> None:
    await conn.execute(select(literal_column("1")))
