"""GET /metrics: every worker process of the host in one scrape, plus the gauges
derived from the store (exporter.service.store_gauges)."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics import exposition as openmetrics
from starlette.requests import Request
from starlette.responses import Response

from exporter.metrics.multiprocess import exposition
from exporter.service.state import get_state
from exporter.service.store_gauges import store_families


async def metrics(request: Request) -> Response:
    state = get_state(request)
    extra = await store_families(state.engine)
    om = "application/openmetrics-text" in request.headers.get("accept", "")
    # In a thread: merging the workers' files must not stall the WebSocket streams.
    body = await asyncio.to_thread(exposition, state.registry, extra, openmetrics_format=om)
    return Response(body, media_type=openmetrics.CONTENT_TYPE_LATEST if om else CONTENT_TYPE_LATEST)
