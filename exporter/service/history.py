"""GET /api/v1/monitoring/history: filtered, newest-first pages with an exact total.

Deep pages do not OFFSET over everything newer: the per-bucket counts that give
the total also tell which minute the page starts in, so the page query skips at
most one minute of rows. ``cursor=`` walks by keyset instead of page numbers.

A search (``error``, ``param.<key>``) has no rollup to count from: its total is
counted from the rows, up to SEARCH_WINDOW of them (``total_count_exact`` says
whether it stopped there), and its pages end there too (the cursor goes on).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import and_
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from exporter.middleware.redaction import REDACTED
from exporter.service.params import (
    SEARCH_WINDOW,
    HistoryQuery,
    decode_cursor,
    encode_cursor,
    parse_query,
)
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
    params = tuple(sorted(query.param.items()))
    return LogFilter(query.task_name, status, query.start_date, query.end_date, query.error, params)


def mappings(rows: Sequence[AnyRow]) -> list[Mapping[str, Any]]:
    return [cast("Mapping[str, Any]", r._mapping) for r in rows]


def finds_nothing(query: HistoryQuery) -> bool:
    """A search for the redaction marker: stored where secrets were, it would find
    them; redacted values are never searchable, so it finds nothing."""
    texts = [query.error or "", *query.param.values()]
    return any(REDACTED in text for text in texts)


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


async def _search(
    conn: AsyncConnection, query: HistoryQuery, log_filter: LogFilter
) -> tuple[int, Sequence[Mapping[str, Any]]]:
    """A search's total (at most SEARCH_WINDOW + 1) and page, straight from the rows:
    in one pass when it matches at most SEARCH_WINDOW rows, else in two."""
    where = log_filter.where()
    size = query.page_size
    after = decode_cursor(query.cursor) if query.cursor is not None else None
    offset = 0 if after is not None else ((query.page or 1) - 1) * size
    await queries.plan_each_time(conn)
    total, rows = await queries.search_rows(
        conn, where=where, window=SEARCH_WINDOW, after=after, limit=size + 1, offset=offset
    )
    if total is not None and total <= SEARCH_WINDOW:
        return total, rows
    if total is None:
        if after is None and offset == 0:
            return 0, []  # the first page found no row: nothing matches
        total = await queries.count_rows(conn, where=where, limit=SEARCH_WINDOW + 1)
    if after is not None:
        where = and_(where, queries.newer_than_cursor(*after))
    elif offset >= total:
        return total, []
    page = await queries.history_rows(conn, where=where, limit=size + 1, offset=offset)
    return total, mappings(page)


async def _page(
    conn: AsyncConnection, query: HistoryQuery
) -> tuple[int, Sequence[Mapping[str, Any]]]:
    """The total and the page's rows (one more than asked: is there a next page?)."""
    log_filter = filter_of(query)
    if log_filter.searching:
        return await _search(conn, query, log_filter)
    size = query.page_size
    offset = ((query.page or 1) - 1) * size
    walk = query.cursor is None and offset > DIRECT_OFFSET
    buckets, total, live = await _buckets(conn, log_filter, grouped=walk)
    if query.cursor is not None:
        stamp, row_id = decode_cursor(query.cursor)
        where = and_(log_filter.where(), queries.newer_than_cursor(stamp, row_id))
        rows = await queries.history_rows(conn, where=where, limit=size + 1)
        return total, mappings(rows)
    if offset >= total:
        return total, []
    rows = await _page_rows(conn, log_filter, buckets, live, offset=offset, limit=size + 1)
    return total, mappings(rows)


async def history(request: Request) -> Response:
    query = parse_query(HistoryQuery, request.query_params)
    size = query.page_size
    reads = get_state(request).reads
    rows: Sequence[Mapping[str, Any]]
    if finds_nothing(query):
        total, rows, headers = 0, [], {}
    else:
        (total, rows), source = await reads.run(lambda conn: _page(conn, query), snapshot=True)
        headers = reads.headers(source)
    exact = total <= SEARCH_WINDOW
    total = min(total, SEARCH_WINDOW) if query.searching else total
    items = [TaskExecutionLogResponse.model_validate(r) for r in rows[:size]]
    last = items[-1] if len(rows) > size and items else None
    body = TaskHistoryResponse(
        total_count=total,
        total_count_exact=exact or not query.searching,
        page=None if query.cursor is not None else (query.page or 1),
        page_size=size,
        total_pages=math.ceil(total / size),
        next_cursor=encode_cursor(last.created_at, last.id) if last else None,
        items=items,
    )
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)
