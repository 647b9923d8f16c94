"""The service's routes, in one place."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from exporter.service import detail, events_ws, health, history, metrics_api, openapi, tasks
from exporter.service.metrics_route import metrics

API = "/api/v1/monitoring"


def routes() -> list[BaseRoute]:
    return [
        Route("/metrics", metrics),
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz),
        Route("/openapi.json", openapi.openapi),
        Route(f"{API}/metrics", metrics_api.monitoring_metrics),
        Route(f"{API}/history", history.history),
        Route(f"{API}/history/task/{{task_id:path}}", detail.task_attempts),
        Route(f"{API}/history/{{id}}", detail.log_detail),
        Route(f"{API}/tasks", tasks.task_names),
        WebSocketRoute(f"{API}/events", events_ws.events),
    ]
