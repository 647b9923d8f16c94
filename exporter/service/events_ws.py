"""WS /api/v1/monitoring/events: live task events, optionally filtered.

``?since=<data.updated_at of the last event seen>`` first replays, from the store,
the rows changed since then (oldest first, inclusive: the last event may come
again), then goes live. Live events come from the hub: PostgreSQL NOTIFY through
the listener, or the embedded writer in the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from exporter.events import TaskEvent
from exporter.service.params import EventsQuery, parse_query
from exporter.service.replay import replay
from exporter.service.state import get_state
from exporter.service.store_check import require_store
from exporter.store.queries import LogFilter

logger = logging.getLogger(__name__)
REPLAY_LIMIT = 50_000


def _matches(event: TaskEvent, query: EventsQuery) -> bool:
    if query.task_name is not None and event.task_name != query.task_name:
        return False
    return query.status is None or event.status == query.status.value


async def _refuse(websocket: WebSocket, message: str, status: int = 400) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"error": message}, status_code=status))
    else:
        # 1011: the server cannot serve now (503); 1008: the request is refused (400).
        await websocket.close(code=1011 if status >= 500 else 1008, reason=message[:120])


async def _stream(websocket: WebSocket, query: EventsQuery) -> None:
    state = get_state(websocket)
    with state.hub.subscribe() as queue:
        # Subscribed before replaying: nothing committed meanwhile is lost.
        replayed: dict[tuple[str, int], datetime] = {}
        if query.since is not None:
            status = query.status.value if query.status else None
            log_filter = LogFilter(task_name=query.task_name, status=status)
            count = 0
            async for event in replay(
                state.engine, since=query.since, log_filter=log_filter, limit=REPLAY_LIMIT
            ):
                replayed[(event.task_id, event.attempt)] = datetime.fromisoformat(event.updated_at)
                await websocket.send_json(event.to_message())
                count += 1
            if count >= REPLAY_LIMIT:
                await websocket.send_json({"type": "replay_truncated"})
        while True:
            event = await queue.get()
            if not _matches(event, query):
                continue
            seen = replayed.get((event.task_id, event.attempt))
            if seen is not None and datetime.fromisoformat(event.updated_at) <= seen:
                continue  # older than the state the replay already sent
            await websocket.send_json(event.to_message())


async def _until_disconnect(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def events(websocket: WebSocket) -> None:
    try:
        query = parse_query(EventsQuery, websocket.query_params)
        await require_store(websocket)
    except HTTPException as exc:  # a bad query (400) or a store not ready (503)
        await _refuse(websocket, str(exc.detail), exc.status_code)
        return
    await websocket.accept()
    stream = asyncio.create_task(_stream(websocket, query))
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
