"""Reads of the execution log: small async functions, keyword-only arguments; the
caller owns the connection and the transaction."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Row,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

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
    # Search: a substring of failed attempts' error messages; (key, value) pairs
    # each argument must equal (see ParamEquals).
    error: str | None = None
    params: tuple[tuple[str, str], ...] = ()

    @property
    def searching(self) -> bool:
        """Whether the filter searches: the rollups cannot count its rows."""
        return self.error is not None or bool(self.params)

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
        if self.error is not None:
            # Only failed attempts have a message; the status lets PostgreSQL use the
            # partial trigram index on them.
            conds.append(LOG.status == TaskStatus.FAILED.value)
            conds.append(LOG.error_message.ilike(f"%{like_escaped(self.error)}%", escape="\\"))
        conds.extend(ParamEquals(key, value) for key, value in self.params)
        return and_(true(), *conds)


def like_escaped(text: str) -> str:
    """``text`` for a LIKE pattern with backslash as the escape: %, _ and \\ literal."""
    return re.sub(r"([%_\\])", r"\\\1", text)


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INT64 = 2**63


def param_candidates(value: str) -> tuple[Any, ...]:
    """What an argument given as ``value`` in a URL may be stored as: the text, and
    the number, boolean or null it spells (``42`` matches 42 and "42"). Numbers
    past int64 are stored as text by the middleware, so they stay text here."""
    out: list[Any] = [value]
    if value in ("true", "false"):
        out.append(value == "true")
    elif value == "null":
        out.append(None)
    elif _JSON_NUMBER.fullmatch(value):
        if not any(c in value for c in ".eE"):
            number = int(value)
            if -_INT64 <= number < _INT64:
                out.append(number)
        else:
            real = float(value)
            if math.isfinite(real) and (real != 0 or not any(c in "123456789" for c in value)):
                out.append(real)
    return tuple(out)


class ParamEquals(ColumnElement[bool]):
    """The row's argument ``key`` (a keyword argument's name, or a position: digits)
    equals one of :func:`param_candidates` of ``value``.

    PostgreSQL: JSONB containment (``params @> '{"kwargs": {"user_id": 42}}'``),
    which a GIN index on params (jsonb_path_ops) answers; a position is contained
    in ``args`` anywhere, then checked at its place. SQLite: json_type and
    json_extract at the argument's path, unindexed.
    """

    type = Boolean()
    inherit_cache = False  # the key and value are compiled in, not bound by SQLAlchemy

    def __init__(self, key: str, value: str) -> None:
        self.argument = key  # not .key: ColumnElement has one, for labels
        self.candidates = param_candidates(value)

    @property
    def position(self) -> int | None:
        return int(self.argument) if self.argument.isdigit() else None


def _json_param(value: Any) -> Any:
    return bindparam(None, value, type_=JSONB, unique=True)


@compiles(ParamEquals, "postgresql")
def _param_equals_pg(element: ParamEquals, compiler: SQLCompiler, **kw: Any) -> str:
    position = element.position
    params = LOG.params
    if position is None:
        docs = [{"kwargs": {element.argument: c}} for c in element.candidates]
        expr: ColumnElement[bool] = or_(*(params.op("@>")(_json_param(d)) for d in docs))
    else:
        contained = or_(*(params.op("@>")(_json_param({"args": [c]})) for c in element.candidates))
        at = params.op("->")(literal_column("'args'")).op("->")(literal_column(str(position)))
        placed = or_(*(at.op("=")(_json_param(c)) for c in element.candidates))
        expr = and_(contained, placed)
    return compiler.process(expr.self_group(), **kw)


@compiles(ParamEquals, "sqlite")
def _param_equals_sqlite(element: ParamEquals, compiler: SQLCompiler, **kw: Any) -> str:
    position = element.position
    path = f'$.kwargs."{element.argument}"' if position is None else f"$.args[{position}]"
    kind = func.json_type(LOG.params, bindparam(None, path, unique=True))
    value = func.json_extract(LOG.params, bindparam(None, path, unique=True))
    arms: list[ColumnElement[bool]] = []
    for c in element.candidates:
        if c is None:
            arms.append(kind == "null")
        elif isinstance(c, bool):
            arms.append(kind == ("true" if c else "false"))
        elif isinstance(c, str):
            arms.append(and_(kind == "text", value == bindparam(None, c, unique=True)))
        else:
            arms.append(
                and_(kind.in_(("integer", "real")), value == bindparam(None, c, unique=True))
            )
    return compiler.process(or_(*arms).self_group(), **kw)


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


async def search_rows(
    conn: AsyncConnection,
    *,
    where: ColumnElement[bool],
    window: int,
    after: tuple[datetime, int] | None,
    limit: int,
    offset: int = 0,
) -> tuple[int | None, list[dict[str, Any]]]:
    """One page of a search and, in the same pass over the matching rows, how many
    match: read up to ``window + 1`` of them, count and order those. The count is
    None when the page is empty (nothing to carry it), and the page is only right
    when the count is at most ``window`` (else every match was not read): the
    caller then asks :func:`count_rows` and :func:`history_rows`. ``after``: a
    cursor's (created_at, id)."""
    found = select(*SUMMARY_COLUMNS, HAS_TRACEBACK).where(where).limit(window + 1).subquery()
    counted = select(found, func.count().over().label("search_total")).subquery()
    c = counted.c
    query = select(counted).order_by(c.created_at.desc(), c.id.desc()).limit(limit).offset(offset)
    if after is not None:
        stamp, row_id = after
        query = query.where(and_(c.created_at <= stamp, or_(c.created_at < stamp, c.id < row_id)))
    rows = [dict(r._mapping) for r in (await conn.execute(query)).all()]
    total = int(rows[0]["search_total"]) if rows else None
    for row in rows:
        del row["search_total"]
    return total, rows


async def plan_each_time(conn: AsyncConnection) -> None:
    """For the rest of the transaction, a plan per statement: a search's best plan
    depends on its values (how common the text is, which partitions its range
    holds), and after a few runs PostgreSQL would reuse a generic one."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


async def count_rows(
    conn: AsyncConnection, *, where: ColumnElement[bool], limit: int | None = None
) -> int:
    """The rows ``where`` admits; with ``limit``, at most that many are counted."""
    if limit is None:
        query = select(func.count()).select_from(TaskExecutionLog.__table__).where(where)
    else:
        found = select(LOG.id).where(where).limit(limit).subquery()
        query = select(func.count()).select_from(found)
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
