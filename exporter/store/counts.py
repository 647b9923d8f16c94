"""Exact counts and per-task aggregates from the rollups, without scanning the log.

Finished rows are counted from the hourly and minute rollups plus the partial
minutes at the range's edges (from the rows, through an index); pending and
running rows, which the rollups do not hold, come from the partial index on them.
The same per-bucket counts let a deep page start from the right minute instead of
an OFFSET over everything newer (:func:`locate`). The rollups also count the
failed attempts that were retried (the middleware marks them), so a task's final
outcome over any window is a sum like the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    column,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.store.models import (
    TaskExecutionLog,
    TaskExecutionRollup,
    TaskExecutionRollupHourly,
    UTCDateTime,
)
from exporter.store.queries import LOG, LogFilter
from exporter.store.ranges import Span, split

AnySelect: TypeAlias = Select[*tuple[Any, ...]]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTES: Table = TaskExecutionRollup.__table__  # type: ignore[assignment]
HOURS: Table = TaskExecutionRollupHourly.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Bucket:
    """Finished rows counted for ``[lo, hi)`` (None: an open end)."""

    lo: datetime | None
    hi: datetime | None
    count: int


def _rollup_conds(
    table: Table, f: LogFilter, lo: datetime | None, hi: datetime | None
) -> list[ColumnElement[bool]]:
    c = table.c
    conds: list[ColumnElement[bool]] = []
    if f.status is not None:  # the rollups hold finished rows only
        conds.append(c.status == f.status)
    if f.task_name is not None:
        conds.append(c.task_name == f.task_name)
    if lo is not None:
        conds.append(c.bucket_start >= lo)
    if hi is not None:
        conds.append(c.bucket_start < hi)
    return conds


def _span_query(index: int, span: Span, f: LogFilter, *, grouped: bool) -> AnySelect:
    """(span index, bucket start, finished rows) per bucket of one span, or one row
    with the span's total when not ``grouped``."""
    tag = literal(index).label("span")
    no_bucket = literal(None, UTCDateTime).label("bucket")
    if span.kind == "rows":
        where = LogFilter(f.task_name, f.status, span.lo, span.hi).where(statuses=f.terminal)
        return (
            select(tag, no_bucket, func.count().label("n"))
            .select_from(TaskExecutionLog.__table__)
            .where(where)
        )
    table = HOURS if span.kind == "hours" else MINUTES
    conds = _rollup_conds(table, f, span.lo, span.hi)
    total = func.sum(table.c.count).label("n")
    if not grouped:
        return select(tag, no_bucket, total).where(*conds)
    bucket = table.c.bucket_start
    return select(tag, bucket.label("bucket"), total).where(*conds).group_by(bucket)


def _newest_first(bucket: Bucket) -> tuple[bool, datetime]:
    return (bucket.hi is None, bucket.hi or EPOCH)


async def finished_buckets(
    conn: AsyncConnection, *, spans: Sequence[Span], log_filter: LogFilter, grouped: bool = True
) -> list[Bucket]:
    """Per-bucket counts of finished rows over ``spans``, newest first, in one statement
    (one bucket per span when not ``grouped``: enough for a total)."""
    if not log_filter.terminal or not spans:
        return []
    parts = [_span_query(i, s, log_filter, grouped=grouped) for i, s in enumerate(spans)]
    query = union_all(*parts) if len(parts) > 1 else parts[0]
    ordered = query.order_by(column("span"), column("bucket").desc())
    buckets = []
    for index, start, n in (await conn.execute(ordered)).all():
        span = spans[index]
        if start is None:
            buckets.append(Bucket(span.lo, span.hi, int(n or 0)))
        else:
            buckets.append(Bucket(start, start + span.step, int(n or 0)))
    return buckets


def merge_live(
    buckets: Iterable[Bucket], spans: Sequence[Span], live: Iterable[datetime]
) -> list[Bucket]:
    """Add pending/running rows to the finished buckets (creating missing ones),
    newest first."""
    extra: Counter[tuple[datetime | None, datetime | None]] = Counter()
    for at in live:
        for span in spans:
            if span.contains(at):
                start = span.bucket_of(at)
                extra[(span.lo, span.hi) if start is None else (start, start + span.step)] += 1
                break
    if not extra:
        return list(buckets)
    merged = []
    for b in buckets:
        n = extra.pop((b.lo, b.hi), 0)
        merged.append(Bucket(b.lo, b.hi, b.count + n) if n else b)
    if extra:  # live rows in buckets without finished rows
        merged.extend(Bucket(lo, hi, n) for (lo, hi), n in extra.items())
        merged.sort(key=_newest_first, reverse=True)
    return merged


def locate(buckets: Sequence[Bucket], offset: int) -> tuple[int, Bucket] | None:
    """The bucket holding row ``offset`` (0-based, newest first) and how many rows
    precede that bucket; None past the end."""
    seen = 0
    for bucket in buckets:
        if seen + bucket.count > offset:
            return seen, bucket
        seen += bucket.count
    return None


@dataclass(frozen=True, slots=True)
class Totals:
    """Attempts of one (task_name, status): how many, their summed duration_ms (of
    finished ones) and, of the failed ones, how many a retry followed."""

    count: int = 0
    duration_ms: float = 0.0
    retried: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.count + other.count,
            self.duration_ms + other.duration_ms,
            self.retried + other.retried,
        )


async def task_totals(
    conn: AsyncConnection, *, lo: datetime, hi: datetime
) -> dict[tuple[str, str], Totals]:
    """(task_name, status) -> Totals of the rows created in ``[lo, hi)``: from the
    rollups where whole hours and minutes are in the range, from the rows at its
    edges and for the live (pending, running) ones."""
    parts: list[AnySelect] = []
    for span in split(lo, hi):
        if span.kind == "rows":
            where = LogFilter(None, None, span.lo, span.hi).where(statuses=LogFilter().terminal)
            parts.append(
                select(
                    LOG.task_name,
                    LOG.status,
                    func.count(),
                    func.sum(LOG.duration_ms),
                    func.count().filter(LOG.retried.is_(True)),
                )
                .where(where)
                .group_by(LOG.task_name, LOG.status)
            )
            continue
        table = HOURS if span.kind == "hours" else MINUTES
        c = table.c
        parts.append(
            select(
                c.task_name,
                c.status,
                func.sum(c.count),
                func.sum(c.duration_ms_sum),
                func.sum(c.retried),
            )
            .where(*_rollup_conds(table, LogFilter(), span.lo, span.hi))
            .group_by(c.task_name, c.status)
        )
    live = LogFilter(None, None, lo, hi)
    parts.append(
        select(LOG.task_name, LOG.status, func.count(), literal(0.0), literal(0))
        .where(live.where(statuses=live.live))
        .group_by(LOG.task_name, LOG.status)
    )
    totals: dict[tuple[str, str], Totals] = {}
    for name, status, n, duration, retried in (await conn.execute(union_all(*parts))).all():
        part = Totals(int(n or 0), float(duration or 0.0), int(retried or 0))
        totals[(name, status)] = totals.get((name, status), Totals()) + part
    return totals
