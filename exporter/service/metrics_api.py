"""GET /api/v1/monitoring/metrics: counts, mean duration and success rates over the
last ``time_window`` hours, per task name and overall.

Two success rates: ``success_rate`` per attempt (a task that failed twice, then
succeeded, counts two failures and one success) and ``outcome_success_rate`` per
task, where only a task_id's final attempt counts. The attempts come from the
rollups (exporter.store.counts); a successful attempt is always final (retry
middlewares re-kick failed ones only), and the failed attempts that were retried
are read from the log, the window's failed rows alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from exporter.rows import TaskStatus
from exporter.service.params import MetricsQuery, parse_query
from exporter.service.schemas import MetricsTotals, MonitoringMetricsResponse, TaskMetrics
from exporter.service.state import get_state
from exporter.store.counts import retried_attempts, task_totals
from exporter.store.models import utcnow

Totals = Mapping[tuple[str, str], tuple[int, float]]


def _fields(count: Mapping[str, int], success_ms: float, tasks_failed: int) -> dict[str, Any]:
    success, failed = count["success"], count["failed"]
    finished_tasks = success + tasks_failed
    return {
        "total_executions": sum(count.values()),
        "pending": count["pending"],
        "running": count["running"],
        "success": success,
        "failed": failed,
        "avg_duration_ms": success_ms / success if success else None,
        "success_rate": success / (success + failed) if success + failed else None,
        "tasks_succeeded": success,
        "tasks_failed": tasks_failed,
        "outcome_success_rate": success / finished_tasks if finished_tasks else None,
    }


def _count(totals: Totals, name: str) -> dict[str, int]:
    return {s.value: totals.get((name, s.value), (0, 0.0))[0] for s in TaskStatus}


def task_metrics(totals: Totals, retried: Mapping[str, int] | None = None) -> list[TaskMetrics]:
    """TaskMetrics per task name, from (task_name, status) -> (attempts, sum of
    duration_ms) and task_name -> failed attempts that were retried (none if not
    given). The mean duration counts successful attempts only; a rate is None when
    nothing it divides by finished."""
    retried = retried or {}
    out = []
    for name in sorted({name for name, _ in totals}):
        count = _count(totals, name)
        if sum(count.values()) == 0:
            continue
        success_ms = totals.get((name, "success"), (0, 0.0))[1]
        # The rollups and the log agree within one snapshot; only a retention run
        # deleting the window's oldest minute meanwhile could make this negative.
        tasks_failed = max(count["failed"] - retried.get(name, 0), 0)
        out.append(TaskMetrics(task_name=name, **_fields(count, success_ms, tasks_failed)))
    return out


def overall(totals: Totals, metrics: list[TaskMetrics]) -> MetricsTotals:
    """The entries of ``metrics`` (built from ``totals``) together."""
    count = {s.value: sum(getattr(m, s.value) for m in metrics) for s in TaskStatus}
    success_ms = sum(ms for (_, status), (_, ms) in totals.items() if status == "success")
    tasks_failed = sum(m.tasks_failed for m in metrics)
    return MetricsTotals(**_fields(count, success_ms, tasks_failed))


async def _window(
    conn: AsyncConnection, *, lo: datetime, hi: datetime
) -> tuple[Totals, Mapping[str, int]]:
    """The window's totals per (task_name, status), and its failed attempts that
    were retried per task name."""
    totals = await task_totals(conn, lo=lo, hi=hi)
    failing = sorted(
        {name for (name, status), (n, _) in totals.items() if status == "failed" and n}
    )
    return totals, await retried_attempts(conn, lo=lo, hi=hi, task_names=failing)


async def monitoring_metrics(request: Request) -> Response:
    query = parse_query(MetricsQuery, request.query_params)
    now = utcnow()
    lo = now - timedelta(hours=query.time_window)
    reads = get_state(request).reads
    (totals, retried), source = await reads.run(
        lambda conn: _window(conn, lo=lo, hi=now), snapshot=True
    )
    metrics = task_metrics(totals, retried)
    body = MonitoringMetricsResponse(
        time_window_hours=query.time_window,
        generated_at=now,
        overall=overall(totals, metrics),
        metrics=metrics,
    )
    headers = reads.headers(source)
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)
