"""GET /metrics: every worker process of the host in one scrape, plus the gauges
derived from the store (exporter.service.store_gauges)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from starlette.requests import Request
from starlette.responses import Response

from exporter.service.state import get_state
from exporter.service.store_gauges import store_families, with_store_gauges


async def metrics(request: Request) -> Response:
    state = get_state(request)
    registry = with_store_gauges(state.registry, await store_families(state.engine))
    accept = request.headers.get("accept", "")
    if "application/openmetrics-text" in accept:
        body = openmetrics.generate_latest(registry)
        return Response(body, media_type=openmetrics.CONTENT_TYPE_LATEST)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
