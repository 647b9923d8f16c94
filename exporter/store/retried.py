"""Marking the retried failures among the rows stored before the log recorded them.

The middleware marks a failed attempt that a retry middleware sent again
(``retried``), and the writers count those in the rollups. Rows from before that
have ``retried`` NULL: this marks the failed ones that a later attempt of the same
task id followed, as the summary used to work out at read time, and adds them to
their minutes' rollups. PostgreSQL only (the SQLite migration does it in one go).

One day of rows per transaction, newest first: the recent windows are right
first, no lock is held for long, and an interrupted run resumes where it stopped
(only rows still NULL are looked at). A failed attempt that is retried after it
was marked stays unmarked: the writers of this version mark it when it finishes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.store.partitions import floor_to

DAY = timedelta(days=1)
# A retry is sent after the attempt it follows, a little before it by a sender's
# skewed clock; the bounds let the lookup skip the partitions outside them. A
# retry sent more than a week later is not seen as one.
SKEW = timedelta(days=1)
RETRY_WITHIN = timedelta(days=7)

# The newest unmarked failed row before a bound: days without any are skipped.
_NEWEST = text(
    "SELECT max(created_at) FROM task_execution_logs "
    "WHERE status = 'failed' AND retried IS NULL AND created_at < CAST(:before AS timestamptz)"
)
_MARK_DAY = text("""
WITH marked AS (
    UPDATE task_execution_logs AS t SET retried = EXISTS (
        SELECT FROM task_execution_logs AS later
        WHERE later.task_id = t.task_id AND later.attempt > t.attempt
          AND later.created_at >= CAST(:skew_lo AS timestamptz)
          AND later.created_at < CAST(:retry_hi AS timestamptz)
    )
    WHERE t.status = 'failed' AND t.retried IS NULL
      AND t.created_at >= CAST(:lo AS timestamptz) AND t.created_at < CAST(:hi AS timestamptz)
    RETURNING t.created_at, t.task_name, t.retried
),
counted AS (
    SELECT date_trunc('minute', created_at) AS bucket_start, task_name, count(*) AS n
    FROM marked WHERE retried GROUP BY 1, 2
),
rolled_up AS (
    UPDATE task_execution_rollups AS r SET retried = r.retried + c.n
    FROM counted AS c
    WHERE r.bucket_start = c.bucket_start AND r.task_name = c.task_name AND r.status = 'failed'
)
SELECT (SELECT count(*) FROM marked), (SELECT COALESCE(sum(n), 0) FROM counted)
""")


async def backfill(
    engine: AsyncEngine, *, on_day: Callable[[datetime, int, int], None] | None = None
) -> tuple[int, int]:
    """Mark the unmarked failed rows; (rows looked at, of which retried).
    ``on_day(day, looked_at, retried)`` follows the progress."""
    if engine.dialect.name != "postgresql":
        return 0, 0
    looked_at = retried = 0
    # Rows an older writer adds meanwhile are behind the bound: the loop ends.
    before = datetime.max.replace(tzinfo=UTC)
    while True:
        async with engine.connect() as conn:
            newest = (await conn.execute(_NEWEST, {"before": before})).scalar_one()
        if newest is None:
            return looked_at, retried
        day = floor_to(newest, 24)
        bounds = {
            "lo": day,
            "hi": day + DAY,
            "skew_lo": day - SKEW,
            "retry_hi": day + DAY + RETRY_WITHIN,
        }
        async with engine.begin() as conn:
            n, r = (await conn.execute(_MARK_DAY, bounds)).one()
        looked_at, retried = looked_at + int(n), retried + int(r)
        if on_day is not None:
            on_day(day, int(n), int(r))
        before = day
