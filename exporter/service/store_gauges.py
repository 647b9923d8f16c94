"""Gauges the service derives from the store at scrape time: pending and running rows
(partial index on live rows, never a scan) and the oldest pending task's age."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.metrics.names import LABEL_STATUS, OLDEST_PENDING_AGE, STORE_UP, TASKS_BY_STATUS
from exporter.store import queries
from exporter.store.models import utcnow

logger = logging.getLogger(__name__)
QUERY_TIMEOUT_SECONDS = 2.0


def families(
    summary: Iterable[tuple[str, int, datetime | None]] | None, now: datetime
) -> list[Metric]:
    """The store gauges from active_summary (None when the store did not answer)."""
    up = GaugeMetricFamily(STORE_UP, "1 when the execution-log store answered this scrape")
    up.add_metric([], 0 if summary is None else 1)
    if summary is None:
        return [up]
    by_status = {status: (n, oldest) for status, n, oldest in summary}
    tasks = GaugeMetricFamily(
        TASKS_BY_STATUS,
        "Task attempts now pending or running (execution log)",
        labels=[LABEL_STATUS],
    )
    for status in queries.LIVE:
        tasks.add_metric([status], by_status.get(status, (0, None))[0])
    oldest = by_status.get("pending", (0, None))[1]
    age = GaugeMetricFamily(
        OLDEST_PENDING_AGE, "Age of the oldest pending task attempt in seconds, 0 when none"
    )
    age.add_metric([], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
    return [up, tasks, age]


async def store_families(engine: AsyncEngine) -> list[Metric]:
    """The gauges, read from ``engine``: the primary, even with a read replica. The
    alerts on them must not lag, and store_up says whether the database the workers
    write to answers (the replica has its own series)."""
    try:
        async with asyncio.timeout(QUERY_TIMEOUT_SECONDS), engine.connect() as conn:
            summary = await queries.active_summary(conn)
    except Exception as exc:  # the scrape still serves the workers' metrics
        logger.warning("store gauges unavailable: %s", exc)
        return families(None, utcnow())
    return families(summary, utcnow())
