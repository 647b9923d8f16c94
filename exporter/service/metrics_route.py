"""GET /metrics: every worker process of the host in one scrape, plus the service's
own series: the gauges derived from the store (exporter.service.store_gauges), the
live-event streams' (exporter.service.events_ws), the read replica's when one is set
(exporter.service.replica), the broker's queues' when it is given (exporter.brokers)
and ``taskiq_exporter_build_info``."""

from __future__ import annotations

import asyncio
import functools

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from starlette.requests import Request
from starlette.responses import Response

from exporter import __version__
from exporter.brokers.backlog import Backlog
from exporter.metrics.multiprocess import exposition
from exporter.metrics.names import BUILD_INFO
from exporter.service.events_ws import event_families
from exporter.service.replica import replica_families
from exporter.service.state import get_state
from exporter.service.store_gauges import families, store_families
from exporter.store.models import utcnow


@functools.cache
def build_info() -> Metric:
    info = GaugeMetricFamily(
        BUILD_INFO,
        "Always 1; the version label names the running taskiq-exporter",
        labels=["version"],
    )
    info.add_metric([__version__], 1)
    return info


async def metrics(request: Request) -> Response:
    state = get_state(request)
    if await state.store.problem() is None:
        store = await store_families(state.engine)
    else:  # said at start-up already: the store is down, without a warning per scrape
        store = families(None, utcnow())
    extra = [build_info(), *store, *event_families(state.hub)]
    backlog: Backlog | None = getattr(request.app.state, "backlog", None)
    if backlog is not None:  # serve --broker: within its own time budget
        extra += await backlog.families()
    replica = await state.reads.check()
    if replica is not None:
        extra += replica_families(replica, state.reads.counts)
    om = "application/openmetrics-text" in request.headers.get("accept", "")
    # In a thread: merging the workers' files must not stall the WebSocket streams.
    body = await asyncio.to_thread(exposition, state.registry, extra, openmetrics_format=om)
    return Response(body, media_type=openmetrics.CONTENT_TYPE_LATEST if om else CONTENT_TYPE_LATEST)
