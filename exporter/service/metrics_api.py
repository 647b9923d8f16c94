"""GET /api/v1/monitoring/metrics: per-task counts, mean duration and success rate
over the last ``time_window`` hours, from the rollups (exporter.store.counts)."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from exporter.service.params import MetricsQuery, parse_query
from exporter.service.schemas import MonitoringMetricsResponse, TaskMetrics
from exporter.service.state import get_state
from exporter.store import queries
from exporter.store.counts import task_totals
from exporter.store.models import TaskStatus, utcnow


def task_metrics(totals: dict[tuple[str, str], tuple[int, float]]) -> list[TaskMetrics]:
    """TaskMetrics per task name: the mean duration counts successful runs only;
    the success rate is success / (success + failed), None when nothing finished."""
    names = sorted({name for name, _ in totals})
    out = []
    for name in names:
        count = {s.value: totals.get((name, s.value), (0, 0.0))[0] for s in TaskStatus}
        success, failed = count["success"], count["failed"]
        success_ms = totals.get((name, "success"), (0, 0.0))[1]
        total = sum(count.values())
        if total == 0:
            continue
        out.append(
            TaskMetrics(
                task_name=name,
                total_executions=total,
                pending=count["pending"],
                running=count["running"],
                success=success,
                failed=failed,
                avg_duration_ms=success_ms / success if success else None,
                success_rate=success / (success + failed) if success + failed else None,
            )
        )
    return out


async def monitoring_metrics(request: Request) -> Response:
    query = parse_query(MetricsQuery, request.query_params)
    now = utcnow()
    async with queries.snapshot(get_state(request).engine) as conn:
        totals = await task_totals(conn, lo=now - timedelta(hours=query.time_window), hi=now)
    body = MonitoringMetricsResponse(
        time_window_hours=query.time_window, generated_at=now, metrics=task_metrics(totals)
    )
    return Response(body.model_dump_json(), media_type="application/json")
