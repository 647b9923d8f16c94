"""Every answer the service has about the stored rows, for tests that inspect the
bodies themselves (valid JSON, no secret, no traceback)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson
from websockets.asyncio.client import connect

API = "/api/v1/monitoring"


def strict_json(body: bytes) -> Any:
    """orjson refuses what ``json`` lets through: invalid UTF-8, lone surrogates."""
    return orjson.loads(body)


async def http_bodies(client: httpx.AsyncClient) -> dict[str, bytes]:
    """GET every page of the history, every row by id and by task_id, the task
    list, the summary and /metrics: {path: body}. Each must answer 200."""
    bodies: dict[str, bytes] = {}

    async def get(path: str) -> bytes:
        response = await client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
        bodies[path] = response.content
        return response.content

    items: list[dict[str, Any]] = []
    page = 1
    while True:
        body = strict_json(await get(f"{API}/history?page_size=200&page={page}"))
        items.extend(body["items"])
        if page >= body["total_pages"]:
            break
        page += 1
    for item in items:
        await get(f"{API}/history/{item['id']}")
        await get(f"{API}/history/task/{quote(item['task_id'], safe='')}")
    await get(f"{API}/tasks")
    await get(f"{API}/metrics?time_window=720")
    await get("/metrics")
    return bodies


async def replayed_events(host: str, since: datetime, rows: int, seconds: float = 30) -> list[str]:
    """The raw messages the events WebSocket replays for rows changed since ``since``
    (one per row), read until ``rows`` have arrived."""
    messages: list[str] = []
    query = urlencode({"since": since.isoformat()})
    async with connect(f"ws://{host}{API}/events?{query}", max_size=None) as ws:
        while len(messages) < rows:
            message = await asyncio.wait_for(ws.recv(), seconds)
            assert isinstance(message, str)
            if json.loads(message).get("type") == "task_event":
                messages.append(message)
    return messages
