"""The Starlette application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware

from exporter.events import EventHub
from exporter.maintenance.loop import run_maintenance
from exporter.metrics.multiprocess import configured_dir, multiprocess_registry
from exporter.service.auth import BearerAuthMiddleware
from exporter.service.errors import exception_handlers
from exporter.service.listener import PgListener
from exporter.service.routes import routes
from exporter.service.state import ServiceState
from exporter.settings import ExporterSettings
from exporter.store.engine import make_engine


def create_app(
    settings: ExporterSettings,
    *,
    registry: CollectorRegistry | None = None,
    hub: EventHub | None = None,
) -> Starlette:
    """Build the service. ``registry`` defaults to the host's multiprocess directory;
    pass the middleware's own registry (and its event hub) to serve one process.
    On PostgreSQL the service LISTENs for the workers' events; otherwise ``hub`` is
    where the in-process writer publishes them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        reg = registry
        if reg is None:
            directory = configured_dir(settings.multiproc_dir)
            reg = multiprocess_registry(directory) if directory else CollectorRegistry()
        events = hub or EventHub()
        app.state.exporter = ServiceState(
            settings=settings, engine=engine, registry=reg, hub=events
        )
        background: list[asyncio.Task[None]] = []
        if settings.maintenance:
            background.append(
                asyncio.create_task(
                    run_maintenance(engine, settings), name="taskiq-exporter-maintenance"
                )
            )
        listener: asyncio.Task[None] | None = None
        if settings.is_postgres:
            pg = PgListener(settings.database_url, events, engine=engine)
            app.state.listener = pg
            listener = asyncio.create_task(pg.run(), name="taskiq-exporter-listener")
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(task, timeout=10)
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            await engine.dispose()

    def secret(value: object) -> str | None:
        get = getattr(value, "get_secret_value", None)
        return get() if get else None

    middleware = [
        Middleware(
            BearerAuthMiddleware,
            api_token=secret(settings.api_token),
            metrics_token=secret(settings.metrics_token),
        )
    ]
    return Starlette(
        routes=routes(),
        middleware=middleware,
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
