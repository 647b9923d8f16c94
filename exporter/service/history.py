"""GET /api/v1/monitoring/history: filtered, newest-first pages with an exact total.

Deep pages do not OFFSET over everything newer: the per-bucket counts that give
the total also tell which minute the page starts in, so the page query skips at
most one minute of rows. ``cursor=`` walks by keyset instead of page numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from exporter.service.params import HistoryQuery, decode_cursor, encode_cursor, parse_query
from exporter.service.schemas import TaskExecutionLogResponse, TaskHistoryResponse
from exporter.service.state import get_state
from exporter.store import queries
from exporter.store.counts import Bucket, finished_buckets, locate, merge_live
from exporter.store.queries import LOG, AnyRow, LogFilter
from exporter.store.ranges import HOUR, Span, split

logger = logging.getLogger(__name__)

# Past this many pending/running rows in the filter, count them in SQL and page
# with OFFSET rather than bucketing them here (a backlog that size is an incident).
LIVE_ROWS_CAP = 20_000
# OFFSET is cheaper than locating a bucket for the first few pages.
DIRECT_OFFSET = 500


def filter_of(query: HistoryQuery) -> LogFilter:
    status = query.status.value if query.status else None
    return LogFilter(query.task_name, status, query.start_date, query.end_date)


async def _buckets(
    conn: AsyncConnection, log_filter: LogFilter, *, grouped: bool
) -> tuple[list[Bucket] | None, int, list[datetime]]:
    """Per-bucket counts newest first (only when ``grouped`` and the live rows are
    not too many), the exact total, and the live rows' created_at."""
    spans = split(log_filter.lo, log_filter.hi)
    live = await queries.live_created_at(conn, log_filter=log_filter, limit=LIVE_ROWS_CAP + 1)
    grouped = grouped and len(live) <= LIVE_ROWS_CAP
    finished = await finished_buckets(conn, spans=spans, log_filter=log_filter, grouped=grouped)
    total = sum(b.count for b in finished)
    if len(live) > LIVE_ROWS_CAP:
        where = log_filter.where(statuses=log_filter.live)
        return None, total + await queries.count_rows(conn, where=where), live
    if not grouped:
        return None, total + len(live), live
    buckets = merge_live(finished, spans, live)
    return buckets, total + len(live), live


async def _page_rows(
    conn: AsyncConnection,
    log_filter: LogFilter,
    buckets: list[Bucket] | None,
    live: list[datetime],
    *,
    offset: int,
    limit: int,
) -> Sequence[AnyRow]:
    where = log_filter.where()
    if buckets is None or offset <= DIRECT_OFFSET:
        return await queries.history_rows(conn, where=where, limit=limit, offset=offset)
    found = locate(buckets, offset)
    if found is None:
        return []
    seen, bucket = found
    if bucket.lo is not None and bucket.hi is not None and bucket.hi - bucket.lo >= HOUR:
        # An hour is too coarse to OFFSET within: count its minutes.
        minutes = [Span("minutes", bucket.lo, bucket.hi)]
        inner = merge_live(
            await finished_buckets(conn, spans=minutes, log_filter=log_filter), minutes, live
        )
        found = locate(inner, offset - seen)
        if found is None:  # cannot happen within one snapshot; stay correct anyway
            return await queries.history_rows(conn, where=where, limit=limit, offset=offset)
        seen, bucket = seen + found[0], found[1]
    if bucket.hi is not None:
        where = and_(where, LOG.created_at < bucket.hi)
    return await queries.history_rows(conn, where=where, limit=limit, offset=offset - seen)


async def _page(conn: AsyncConnection, query: HistoryQuery) -> tuple[int, Sequence[AnyRow]]:
    """The total and the page's rows (one more than asked: is there a next page?)."""
    log_filter = filter_of(query)
    size = query.page_size
    offset = ((query.page or 1) - 1) * size
    walk = query.cursor is None and offset > DIRECT_OFFSET
    buckets, total, live = await _buckets(conn, log_filter, grouped=walk)
    if query.cursor is not None:
        stamp, row_id = decode_cursor(query.cursor)
        where = and_(log_filter.where(), queries.newer_than_cursor(stamp, row_id))
        return total, await queries.history_rows(conn, where=where, limit=size + 1)
    if offset >= total:
        return total, []
    return total, await _page_rows(conn, log_filter, buckets, live, offset=offset, limit=size + 1)


async def history(request: Request) -> Response:
    query = parse_query(HistoryQuery, request.query_params)
    size = query.page_size
    reads = get_state(request).reads
    (total, rows), source = await reads.run(lambda conn: _page(conn, query), snapshot=True)
    items = [TaskExecutionLogResponse.model_validate(r._mapping) for r in rows[:size]]
    last = items[-1] if len(rows) > size and items else None
    body = TaskHistoryResponse(
        total_count=total,
        page=None if query.cursor is not None else (query.page or 1),
        page_size=size,
        total_pages=math.ceil(total / size),
        next_cursor=encode_cursor(last.created_at, last.id) if last else None,
        items=items,
    )
    return Response(
        body.model_dump_json(), media_type="application/json", headers=reads.headers(source)
    )
