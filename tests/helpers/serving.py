"""The service under test: the app with its lifespan and an HTTP client bound to it
(no sockets), or behind a real uvicorn (for WebSockets)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette

from exporter.app import create_app
from exporter.events import EventHub
from exporter.settings import ExporterSettings


@contextlib.asynccontextmanager
async def running_service(
    url: str, *, hub: EventHub | None = None, raise_errors: bool = True, **settings: object
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """The app with its lifespan running, and an HTTP client bound to it (no sockets).
    The reaper and retention jobs stay off unless asked for: they would change the data."""
    settings.setdefault("maintenance", False)
    app = create_app(ExporterSettings(database_url=url, **settings), hub=hub)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        # raise_errors=False: see the 500 response as a server would send it.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors)
        async with httpx.AsyncClient(transport=transport, base_url="http://exporter") as client:
            yield app, client


@contextlib.asynccontextmanager
async def serving(app: Starlette, port: int, *, root_path: str = "") -> AsyncIterator[str]:
    """The app behind a real uvicorn on 127.0.0.1:port (for WebSockets); with
    ``root_path``, as behind a proxy that strips that prefix."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", root_path=root_path
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
