"""The Starlette application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from prometheus_client.registry import CollectorRegistry
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware

from exporter.brokers.backlog import Backlog
from exporter.brokers.select import inspector_for, load_broker
from exporter.events import EventHub
from exporter.maintenance.loop import run_maintenance
from exporter.metrics.multiprocess import configured_dir, multiprocess_registry
from exporter.middleware.labels import SENT_AT_LABEL, sent_at
from exporter.service.auth import BearerAuthMiddleware
from exporter.service.errors import exception_handlers
from exporter.service.headers import SecurityHeadersMiddleware
from exporter.service.hosts import HostCheckMiddleware, trusted_hosts
from exporter.service.listener import PgListener
from exporter.service.reads import Reads
from exporter.service.routes import routes
from exporter.service.state import ServiceState
from exporter.service.store_check import StoreCheck
from exporter.settings import GENERATE_HINT, MIN_TOKEN_LENGTH, ExporterSettings
from exporter.store.engine import make_engine

logger = logging.getLogger(__name__)
REPLICA_CONNECT_TIMEOUT_SECONDS = 3.0


def lifespan_of(app: Starlette) -> contextlib.AbstractAsyncContextManager[Any]:
    """The lifespan of an app made by :func:`create_app`, for a host that mounts it.
    Starlette runs only the outermost application's lifespan, so the host enters
    the mounted app's in its own::

        monitoring = create_app(settings)

        @contextlib.asynccontextmanager
        async def lifespan(host: Starlette) -> AsyncIterator[None]:
            async with lifespan_of(monitoring):
                yield

        host = Starlette(routes=[Mount("/monitoring", app=monitoring)], lifespan=lifespan)
    """
    return app.router.lifespan_context(app)


async def _maintain(store: StoreCheck, engine: AsyncEngine, settings: ExporterSettings) -> None:
    # The jobs would fail on every run against a database without the schema.
    await store.wait_ready()
    await run_maintenance(engine, settings)


def _reads(primary: AsyncEngine, replica_url: str | None) -> Reads:
    if replica_url is None:
        return Reads(primary)
    shown = make_url(replica_url).render_as_string(hide_password=True)
    logger.info("taskiq-exporter: the API reads from the replica %s", shown)
    # A short connect timeout: a replica that does not answer costs a read this long
    # before it falls back to the primary (once: it is then marked down).
    connect_args = {"timeout": REPLICA_CONNECT_TIMEOUT_SECONDS}
    return Reads(primary, make_engine(replica_url, create=False, connect_args=connect_args))


def _sent_time(labels: Mapping[str, Any]) -> float | None:
    return sent_at(labels.get(SENT_AT_LABEL))


def _backlog(settings: ExporterSettings, broker: object | None) -> Backlog | None:
    if broker is None and settings.broker is None:
        return None
    target = broker if broker is not None else load_broker(str(settings.broker))
    return Backlog(
        inspector_for(target, sent_time=_sent_time),
        broker_name=type(target).__name__,
        timeout_seconds=settings.broker_inspect_timeout_seconds,
        budget_seconds=settings.broker_inspect_budget_seconds,
        cache_seconds=settings.broker_inspect_cache_seconds,
    )


def _warn_about_tokens(settings: ExporterSettings) -> None:
    # `serve` refuses a short token and warns about an open API; an embedding app
    # (whose host may check access itself) is warned about what it set.
    for name in settings.short_tokens():
        logger.warning(
            "TASKIQ_EXPORTER_%s is shorter than %d characters: use a longer one (%s)",
            name.upper(),
            MIN_TOKEN_LENGTH,
            GENERATE_HINT,
        )


def create_app(
    settings: ExporterSettings,
    *,
    registry: CollectorRegistry | None = None,
    hub: EventHub | None = None,
    broker: object | None = None,
) -> Starlette:
    """Build the service. ``registry`` defaults to the host's multiprocess directory;
    pass the middleware's own registry (and its event hub) to serve one process.
    On PostgreSQL the service LISTENs for the workers' events; otherwise ``hub`` is
    where the in-process writer publishes them. ``broker`` (else ``settings.broker``,
    imported) is the taskiq broker whose queues /metrics reports.

    The app can be mounted in another Starlette or FastAPI application
    (``Mount("/monitoring", app=monitoring)``); the host must then run its lifespan,
    see :func:`lifespan_of`. Until it has, the routes that need the service's state
    (the API, ``/metrics``, ``/readyz``) answer 503; while the database is missing or
    not migrated, the API answers 503 naming the fix."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        _warn_about_tokens(settings)
        # create=False: a SQLite file that does not exist yet is reported, not created.
        engine = make_engine(settings.database_url, create=False)
        store = StoreCheck(engine, settings.database_url)
        await store.start()
        reads = _reads(engine, settings.read_database_url)
        reg = registry
        if reg is None:
            directory = configured_dir(settings.multiproc_dir)
            reg = multiprocess_registry(directory) if directory else CollectorRegistry()
        events = hub or EventHub()
        backlog = _backlog(settings, broker)
        app.state.backlog = backlog
        app.state.exporter = ServiceState(
            settings=settings, engine=engine, registry=reg, store=store, reads=reads, hub=events
        )
        background: list[asyncio.Task[None]] = []
        if reads.replica is not None:
            background.append(asyncio.create_task(reads.watch(), name="taskiq-exporter-replica"))
        if settings.maintenance:  # on the primary: the reaper and retention write
            background.append(
                asyncio.create_task(
                    _maintain(store, engine, settings), name="taskiq-exporter-maintenance"
                )
            )
        listener: asyncio.Task[None] | None = None
        if settings.is_postgres:
            # On the primary: a replica cannot LISTEN, and the rows a NOTIFY names may
            # not have replayed there yet.
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
            if backlog is not None:
                await backlog.close()
            if reads.replica is not None:
                await reads.replica.dispose()

    def secret(value: object) -> str | None:
        # A plain string (set through model_copy) is a token too: never None by mistake.
        if value is None:
            return None
        get = getattr(value, "get_secret_value", None)
        return str(get() if get else value)

    # Outermost first: every answer gets the headers, a foreign Host or Origin is
    # refused before the token is looked at.
    middleware = [
        Middleware(SecurityHeadersMiddleware),
        Middleware(
            HostCheckMiddleware,
            hosts=trusted_hosts(settings.host, settings.allowed_hosts),
            check_host=settings.allowed_hosts is not None,
            origins=settings.allowed_origins,
        ),
        Middleware(
            BearerAuthMiddleware,
            api_token=secret(settings.api_token),
            metrics_token=secret(settings.metrics_token),
        ),
    ]
    return Starlette(
        routes=routes(),
        middleware=middleware,
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
