"""GET /api/v1/monitoring/metrics: counts, mean duration and success rates over the
last ``time_window`` hours, per task name and overall.

Two success rates: ``success_rate`` per attempt (a task that failed twice, then
succeeded, counts two failures and one success) and ``outcome_success_rate`` per
task, where only a task_id's final attempt counts. The attempts come from the
rollups (exporter.store.counts); a successful attempt is always final (retry
middlewares re-kick failed ones only), and the rollups count the failed attempts
that were retried beside the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from exporter.rows import TaskStatus
from exporter.service.params import MetricsQuery, parse_query
from exporter.service.schemas import MetricsTotals, MonitoringMetricsResponse, TaskMetrics
from exporter.service.state import get_state
from exporter.store.counts import Totals, task_totals
from exporter.store.models import utcnow

TaskTotals = Mapping[tuple[str, str], Totals]


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


def _of(totals: TaskTotals, name: str, status: str) -> Totals:
    return totals.get((name, status)) or Totals()


def task_metrics(totals: TaskTotals) -> list[TaskMetrics]:
    """TaskMetrics per task name from (task_name, status) -> Totals. The mean
    duration counts successful attempts only; a rate is None when nothing it
    divides by finished."""
    out = []
    for name in sorted({name for name, _ in totals}):
        count = {s.value: _of(totals, name, s.value).count for s in TaskStatus}
        if sum(count.values()) == 0:
            continue
        success_ms = _of(totals, name, "success").duration_ms
        failed = _of(totals, name, "failed")
        tasks_failed = max(failed.count - failed.retried, 0)
        out.append(TaskMetrics(task_name=name, **_fields(count, success_ms, tasks_failed)))
    return out


def overall(totals: TaskTotals, metrics: list[TaskMetrics]) -> MetricsTotals:
    """The entries of ``metrics`` (built from ``totals``) together."""
    count = {s.value: sum(getattr(m, s.value) for m in metrics) for s in TaskStatus}
    success_ms = sum(t.duration_ms for (_, status), t in totals.items() if status == "success")
    tasks_failed = sum(m.tasks_failed for m in metrics)
    return MetricsTotals(**_fields(count, success_ms, tasks_failed))


async def monitoring_metrics(request: Request) -> Response:
    query = parse_query(MetricsQuery, request.query_params)
    now = utcnow()
    lo = now - timedelta(hours=query.time_window)
    reads = get_state(request).reads
    totals, source = await reads.run(lambda conn: task_totals(conn, lo=lo, hi=now))
    metrics = task_metrics(totals)
    body = MonitoringMetricsResponse(
        time_window_hours=query.time_window,
        generated_at=now,
        overall=overall(totals, metrics),
        metrics=metrics,
    )
    headers = reads.headers(source)
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)
