"""The service's view of a broker's backlog, for the tests: /metrics scraped into
``{(name, queue): value}``, a burst left waiting and the checks of its age, and the
services a broker test needs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from taskiq import AsyncBroker

from exporter.app import create_app
from exporter.settings import ExporterSettings

Scraped = dict[tuple[str, str], float]

N = 7
WAITED = 0.3
# Every scrape inspects again (the cache has its own test).
FRESH = {"broker_inspect_cache_seconds": 0.0}


async def send_burst(broker: AsyncBroker) -> float:
    """N messages sent with the middleware (it stamps the send time), no worker:
    one, then the rest WAITED seconds later. Returns when the first was sent."""

    @broker.task(task_name="backlog:noop")
    async def noop() -> None:
        return None

    started = time.time()
    await noop.kiq()
    await asyncio.sleep(WAITED)
    for _ in range(N - 1):
        await noop.kiq()
    return started


def check_age(value: float, sent_from: float) -> None:
    # The first message's age: it waited WAITED before the others were sent (the
    # newest has waited milliseconds), and it was not sent before the burst began.
    assert WAITED <= value <= time.time() - sent_from


def check_later_age(value: float, sent_from: float) -> None:
    # A later message's age: sent WAITED after the first, so younger by that much.
    assert 0 < value <= time.time() - sent_from - WAITED


def require(host: str, port: int, what: str) -> None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is required when CI is set: {exc!r}")
        pytest.skip(f"{what} not available: {exc!r}")


def unique(prefix: str) -> str:
    return f"texp_{prefix}_{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def scraping(
    url: str, broker: AsyncBroker, **settings: Any
) -> AsyncIterator[Callable[[], Awaitable[Scraped]]]:
    """The service given ``broker`` (as the CLI gives the one it imported), and a
    function that scrapes its /metrics into ``{(name, queue): value}``."""
    app = create_app(
        ExporterSettings(database_url=url, maintenance=False, **settings), broker=broker
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://exporter") as client:

            async def scrape() -> Scraped:
                return parsed(await client.get("/metrics"))

            yield scrape


def parsed(response: httpx.Response) -> Scraped:
    assert response.status_code == 200
    return {
        (s.name, s.labels.get("queue", s.labels.get("broker", ""))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.name.startswith("taskiq_queue_")
    }
