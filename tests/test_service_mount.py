"""The service inside a host application: mounted under a prefix with its lifespan
entered by the host's, or served with uvicorn's root path; the tokens apply to
every path either way, and a host that never runs the lifespan gets 503s."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from exporter import __version__
from exporter.service.app import create_app, lifespan_of
from exporter.service.state import NOT_STARTED
from exporter.settings import ExporterSettings
from tests.helpers.serving import serving

HISTORY = "/api/v1/monitoring/history"
EVENTS = "/api/v1/monitoring/events"
API = {"Authorization": "Bearer api-token"}
SCRAPE = {"Authorization": "Bearer scrape-token"}


def monitoring(url: str) -> Starlette:
    settings = ExporterSettings(
        database_url=url,
        maintenance=False,
        api_token="api-token",  # type: ignore[arg-type]
        metrics_token="scrape-token",  # type: ignore[arg-type]
    )
    return create_app(settings)


def host_of(app: Starlette, *, run_lifespan: bool = True) -> Starlette:
    """A host application that mounts ``app`` under /monitoring."""

    @contextlib.asynccontextmanager
    async def lifespan(_host: Starlette) -> AsyncIterator[None]:
        async with lifespan_of(app):
            yield

    routes = [Mount("/monitoring", app=app)]
    return Starlette(routes=routes, lifespan=lifespan if run_lifespan else None)


async def refused(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as exc:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    return exc.value.response.status_code


async def test_mounted_with_the_lifespan_through_the_hosts(
    sqlite_store: str, unused_port: Callable[[], int]
) -> None:
    async with (
        serving(host_of(monitoring(sqlite_store)), unused_port()) as host,
        httpx.AsyncClient(base_url=f"http://{host}/monitoring") as client,
    ):
        assert (await client.get(HISTORY)).status_code == 401
        ok = await client.get(HISTORY, headers=API)
        assert ok.status_code == 200
        assert ok.json()["total_count"] == 0
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=API)).status_code == 401
        scrape = await client.get("/metrics", headers=SCRAPE)
        assert scrape.status_code == 200
        assert f'taskiq_exporter_build_info{{version="{__version__}"}} 1.0' in scrape.text
        assert (await client.get("/healthz")).json() == {"status": "ok", "version": __version__}
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/runbook")).status_code == 200
        assert (await client.get("/no-such-route")).status_code == 401
        assert (await client.get("/no-such-route", headers=API)).status_code == 404

        url = f"ws://{host}/monitoring{EVENTS}"
        assert await refused(url) == 401
        assert await refused(url + "?token=wrong") == 401
        async with connect(url, additional_headers=API) as ws:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.2)  # accepted, nothing happened yet


async def test_served_under_a_root_path(sqlite_store: str, unused_port: Callable[[], int]) -> None:
    app = monitoring(sqlite_store)
    async with (
        serving(app, unused_port(), root_path="/monitoring") as host,
        httpx.AsyncClient(base_url=f"http://{host}") as client,
    ):
        assert (await client.get(HISTORY)).status_code == 401
        assert (await client.get(HISTORY, headers=API)).status_code == 200
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=SCRAPE)).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        # The prefix itself, not stripped by a proxy: no route, and not served openly.
        assert (await client.get(f"/monitoring{HISTORY}")).status_code == 401
        url = f"ws://{host}{EVENTS}"
        assert await refused(url) == 401
        async with connect(url, additional_headers=API):
            pass


async def test_mounted_through_asgi_transport(sqlite_store: str) -> None:
    host = host_of(monitoring(sqlite_store))
    transport = httpx.ASGITransport(app=host)
    async with (
        host.router.lifespan_context(host),
        httpx.AsyncClient(transport=transport, base_url="http://t/monitoring") as client,
    ):
        assert (await client.get(HISTORY)).status_code == 401
        assert (await client.get(HISTORY, headers=API)).status_code == 200
        assert (await client.get("/metrics")).status_code == 401


async def test_without_the_lifespan_the_routes_answer_503(
    sqlite_store: str, unused_port: Callable[[], int]
) -> None:
    host = host_of(monitoring(sqlite_store), run_lifespan=False)
    async with (
        serving(host, unused_port()) as address,
        httpx.AsyncClient(base_url=f"http://{address}/monitoring") as client,
    ):
        for path, headers in [
            (HISTORY, API),
            ("/api/v1/monitoring/tasks", API),
            ("/api/v1/monitoring/metrics", API),
            ("/metrics", SCRAPE),
            ("/readyz", {}),
        ]:
            response = await client.get(path, headers=headers)
            assert response.status_code == 503, path
            assert response.json() == {"error": NOT_STARTED}, path
        assert (await client.get(HISTORY)).status_code == 401  # the token comes first
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/runbook")).status_code == 200
        url = f"ws://{address}/monitoring{EVENTS}"
        assert await refused(url, additional_headers=API) == 503
