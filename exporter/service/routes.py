"""The service's routes, in one place."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from exporter.service import (
    detail,
    events_ws,
    health,
    history,
    metrics_api,
    openapi,
    runbook,
    tasks,
)
from exporter.service.metrics_route import metrics
from exporter.service.store_check import needs_store

API = "/api/v1/monitoring"


def routes() -> list[BaseRoute]:
    # needs_store: a 503 naming the fix while the database is missing or not migrated.
    # The events WebSocket checks the store itself (it refuses the handshake).
    return [
        Route("/metrics", metrics),
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz),
        Route("/openapi.json", openapi.openapi),
        Route("/runbook", runbook.runbook),
        Route(f"{API}/metrics", needs_store(metrics_api.monitoring_metrics)),
        Route(f"{API}/history", needs_store(history.history)),
        Route(f"{API}/history/task/{{task_id:path}}", needs_store(detail.task_attempts)),
        Route(f"{API}/history/{{id}}", needs_store(detail.log_detail)),
        Route(f"{API}/tasks", needs_store(tasks.task_names)),
        WebSocketRoute(f"{API}/events", events_ws.events),
    ]
