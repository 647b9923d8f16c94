"""WS /api/v1/monitoring/events: live task events, optionally filtered, within bounds.

``?since=<data.updated_at of the last event seen>`` first replays, from the store,
the rows changed since then (oldest first, inclusive: the last event may come
again), then goes live. Live events come from the hub: PostgreSQL NOTIFY through
the listener, or the embedded writer in the same process.

The bounds (the ``events_*`` settings): streams in all and per remote address
(beyond them, close code 1013); how far back a replay reaches (``replay_clamped``)
and how many rows it sends (``replay_truncated``); events queued for a slow client
(``events_dropped``); the size of a client's message (the client has nothing to
say: close code 1009).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from exporter.events import Dropped, EventHub, Subscription, Turns
from exporter.metrics.names import (
    EVENTS_CONNECTIONS,
    EVENTS_CONNECTIONS_REFUSED,
    EVENTS_DROPPED,
    EVENTS_REPLAYS_TRUNCATED,
    LABEL_REASON,
)
from exporter.service.params import EventsQuery, parse_query
from exporter.service.replay import Replay
from exporter.service.state import get_state
from exporter.service.store_check import require_store
from exporter.settings import ExporterSettings
from exporter.store.models import utcnow
from exporter.store.queries import LogFilter

logger = logging.getLogger(__name__)
# Clients only listen: a larger message is a mistake or abuse. (uvicorn has read
# the whole message before the app sees it: its ws_max_size bounds that.)
INBOUND_MAX_BYTES = 4_096
# A send rarely waits (only when the socket's buffer is full), so the streams take
# turns (EventHub.turns) at sending, this many messages at most at a time.
SEND_BURST = 16
TRY_AGAIN_LATER = 1013
MESSAGE_TOO_BIG = 1009
REFUSED_TOTAL = "max_connections"
REFUSED_PER_CLIENT = "max_connections_per_client"
# How long a since= replay waits for the read replica to catch up before it reads
# the primary instead.
REPLICA_CATCH_UP_SECONDS = 2.0


async def _refuse(websocket: WebSocket, message: str, status: int = 400) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"error": message}, status_code=status))
    else:
        # 1011: the server cannot serve now (503); 1008: the request is refused (400).
        await websocket.close(code=1011 if status >= 500 else 1008, reason=message[:120])


def _over_limit(hub: EventHub, settings: ExporterSettings, client: str) -> tuple[str, str] | None:
    """Which limit a new stream from ``client`` would exceed, and what to tell it."""
    if hub.subscribers >= settings.events_max_connections:
        limit = settings.events_max_connections
        return REFUSED_TOTAL, f"too many event streams (limit {limit}); try again later"
    if hub.connections(client) >= settings.events_max_connections_per_client:
        limit = settings.events_max_connections_per_client
        return REFUSED_PER_CLIENT, f"too many event streams from one address (limit {limit})"
    return None


def replay_horizon(settings: ExporterSettings, now: datetime) -> datetime:
    """The oldest ``since`` a replay starts from."""
    age = min(settings.events_max_replay_age_seconds, settings.retention_days * 86_400)
    return now - timedelta(seconds=age)


class _Pace:
    """A stream's share of the loop: wait for it before each message."""

    def __init__(self, turns: Turns) -> None:
        self.turns = turns
        self.credit = 0

    async def __call__(self) -> None:
        if not self.credit:
            self.credit = await self.turns.take(SEND_BURST)
        self.credit -= 1


async def _replay(
    websocket: WebSocket, query: EventsQuery, since: datetime, pace: _Pace
) -> dict[tuple[str, int], datetime]:
    """Send the replay; the updated_at each replayed attempt was sent with."""
    state = get_state(websocket)
    settings = state.settings
    horizon = replay_horizon(settings, utcnow())
    if since < horizon:
        clamped = {"type": "replay_clamped", "since": horizon.isoformat()}
        await websocket.send_json(clamped | {"requested": since.isoformat()})
        since = horizon
    status = query.status.value if query.status else None
    # The stream subscribed before this: the replay must show every row committed
    # before then, which a replica does only once it has replayed that far.
    caught_up = await state.reads.replica_has_caught_up(seconds=REPLICA_CATCH_UP_SECONDS)
    replay = Replay(
        state.reads,
        since=since,
        log_filter=LogFilter(task_name=query.task_name, status=status),
        limit=settings.events_max_replay_rows,
        replica=caught_up,
    )
    replayed: dict[tuple[str, int], datetime] = {}
    async for event in replay.events():
        replayed[(event.task_id, event.attempt)] = datetime.fromisoformat(event.updated_at)
        await pace()
        await websocket.send_json(event.to_message())
    if replay.resume_from is not None:
        state.hub.stats.replays_truncated += 1
        cut = {"type": "replay_truncated", "resume_from": replay.resume_from.isoformat()}
        await websocket.send_json(cut)
    return replayed


async def _stream(websocket: WebSocket, query: EventsQuery, sub: Subscription) -> None:
    pace = _Pace(get_state(websocket).hub.turns)
    # Subscribed before replaying: nothing committed meanwhile is lost.
    replayed = {} if query.since is None else await _replay(websocket, query, query.since, pace)
    while True:
        if not len(sub):
            pace.credit = 0  # a turn's share is for now, not for whenever events come
        item = await sub.get()
        if isinstance(item, Dropped):
            await websocket.send_json(item.to_message())
            continue
        event, text = item
        seen = replayed.get((event.task_id, event.attempt))
        if seen is not None and datetime.fromisoformat(event.updated_at) <= seen:
            continue  # older than the state the replay already sent
        await pace()
        await websocket.send_text(text)


async def _until_disconnect(websocket: WebSocket) -> None:
    while (message := await websocket.receive())["type"] != "websocket.disconnect":
        data = message.get("bytes") or (message.get("text") or "").encode()
        if len(data) > INBOUND_MAX_BYTES:
            reason = f"this endpoint only sends; messages over {INBOUND_MAX_BYTES} bytes close it"
            await websocket.close(code=MESSAGE_TOO_BIG, reason=reason)
            return


async def events(websocket: WebSocket) -> None:
    try:
        query = parse_query(EventsQuery, websocket.query_params)
        await require_store(websocket)
    except HTTPException as exc:  # a bad query (400) or a store not ready (503)
        await _refuse(websocket, str(exc.detail), exc.status_code)
        return
    state = get_state(websocket)
    client = websocket.client.host if websocket.client else ""
    over = _over_limit(state.hub, state.settings, client)
    if over is not None:
        reason, message = over
        state.hub.stats.refused[reason] = state.hub.stats.refused.get(reason, 0) + 1
        # Accepted first: a browser sees the close code and reason, not an HTTP status.
        with contextlib.suppress(WebSocketDisconnect, OSError):
            await websocket.accept()
            await websocket.close(code=TRY_AGAIN_LATER, reason=message)
        return
    with state.hub.subscribe(
        client=client,
        task_name=query.task_name,
        status=query.status.value if query.status else None,
        queue_size=state.settings.events_queue_size,
    ) as sub:
        await websocket.accept()
        stream = asyncio.create_task(_stream(websocket, query, sub))
        reader = asyncio.create_task(_until_disconnect(websocket))
        done, pending = await asyncio.wait({stream, reader}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await task
    for task in done:
        error = task.exception()
        if error is not None and not isinstance(error, WebSocketDisconnect | OSError):
            logger.warning("event stream ended: %r", error)
            with contextlib.suppress(Exception):
                await websocket.close(code=1011)


def event_families(hub: EventHub) -> list[Metric]:
    """The service's series about its event streams, for /metrics."""
    connections = GaugeMetricFamily(
        EVENTS_CONNECTIONS, "Open live-event WebSocket streams", value=hub.subscribers
    )
    refused = CounterMetricFamily(
        EVENTS_CONNECTIONS_REFUSED,
        "Live-event streams refused with close code 1013, by the limit reached",
        labels=[LABEL_REASON],
    )
    for reason in (REFUSED_TOTAL, REFUSED_PER_CLIENT):
        refused.add_metric([reason], hub.stats.refused.get(reason, 0))
    dropped = CounterMetricFamily(
        EVENTS_DROPPED,
        "Live events left out of a slow client's full queue (the client is told events_dropped)",
        value=hub.stats.dropped,
    )
    truncated = CounterMetricFamily(
        EVENTS_REPLAYS_TRUNCATED,
        "since= replays stopped at events_max_replay_rows (the client is told replay_truncated)",
        value=hub.stats.replays_truncated,
    )
    return [connections, refused, dropped, truncated]
