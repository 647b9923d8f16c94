"""``taskiq-exporter demo``: the whole product in one process, nothing to install.

Ten typical task types run on an in-memory broker with the monitoring
middleware, the embedded SQLite store and the service on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from typing import Any

from exporter.cli.options import CliError, display_url, positive, settings_from

DEFAULT_DB = Path(".taskiq-exporter") / "demo.sqlite3"
API = "/api/v1/monitoring"
DRAIN_SECONDS = 3.0  # for the tasks in flight at a stop; the slowest takes 1.5 s
FAILURE_POLL_SECONDS = 1.0


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run a demo worker, store and service in one process")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8000, help="TCP port to listen on (default 8000)"
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help=f"default: a SQLite file of its own, {DEFAULT_DB}",
    )
    parser.add_argument(
        "--rate",
        type=positive,
        default=10.0,
        metavar="N",
        help="tasks sent per second (default 10)",
    )
    parser.add_argument(
        "--duration", type=positive, metavar="SECONDS", help="stop after this many seconds"
    )
    parser.set_defaults(run=run)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As uvicorn binds: a port whose last connections are only in TIME_WAIT
        # (a demo stopped a moment ago) is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def run(args: argparse.Namespace, _extra: list[str]) -> int:
    if not _port_free(args.host, args.port):
        raise CliError(
            f"{args.host}:{args.port} is already in use; choose another with --port", code=2
        )
    # taskiq logs every start and every failure with its traceback: the demo
    # shows them through the history API instead.
    logging.getLogger("taskiq").setLevel(logging.CRITICAL)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(args))
    return 0


async def _produce(tasks: Any, rate: float) -> None:
    from exporter.demo.tasks import send_random

    sent = 0
    while True:
        await send_random(tasks, sent)
        sent += 1
        await asyncio.sleep(1.0 / rate)


async def _point_at_a_failure(engine: Any, base: str) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from exporter.demo.store import newest_failure

    while True:
        found = None
        with contextlib.suppress(SQLAlchemyError):  # a busy store: ask again
            found = await newest_failure(engine)
        if found is not None:
            print(f"  a failure:    {base}{API}/history/{found}   (its traceback)", flush=True)
            return
        await asyncio.sleep(FAILURE_POLL_SECONDS)


async def _drain(broker: Any) -> None:
    """Let the tasks in flight finish, then cancel the rest: the middleware records
    each as failed (CancelledError: demo stopped), so none is left running."""
    # InMemoryBroker keeps its in-flight tasks in a private set (taskiq 0.12, 0.13);
    # without it the rest are cut off and the next start closes them.
    running: set[asyncio.Task[Any]] = getattr(broker, "_running_tasks", set())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_SECONDS
    while running and (left := deadline - loop.time()) > 0:
        await asyncio.wait(set(running), timeout=left)
    while running:  # a cancelled attempt may be retried once more
        for task in list(running):
            task.cancel("demo stopped")
        await asyncio.gather(*running, return_exceptions=True)


async def _demo(args: argparse.Namespace) -> None:
    import uvicorn
    from taskiq import InMemoryBroker
    from taskiq.middlewares import SimpleRetryMiddleware

    from exporter import MonitoringMiddleware
    from exporter.demo.store import close_previous_run
    from exporter.demo.tasks import register as register_tasks
    from exporter.events import EventHub
    from exporter.service.app import create_app
    from exporter.store.engine import make_engine

    settings = settings_from(args, "host", "port")
    private = args.database_url is None
    if private:
        url = f"sqlite+aiosqlite:///{DEFAULT_DB.resolve()}"
        settings = settings.model_copy(update={"database_url": url})
    hub = EventHub()
    monitoring = MonitoringMiddleware(settings=settings, hub=hub)
    broker = InMemoryBroker(max_async_tasks=200).with_middlewares(
        SimpleRetryMiddleware(default_retry_count=3), monitoring
    )
    tasks = register_tasks(broker)
    await broker.startup()  # creates the embedded store's schema
    engine = make_engine(settings.database_url)
    if private:
        await close_previous_run(engine)
    app = create_app(settings, registry=monitoring.registry, hub=hub)
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    )
    base = f"http://{args.host}:{args.port}"
    print(
        "taskiq-exporter demo: ten task types running, a few fail and one retries.\n"
        f"  metrics:      {base}/metrics\n"
        f"  failures:     {base}{API}/history?status=failed&page_size=1\n"
        f"                (open a record's id at {base}{API}/history/<id> for its traceback)\n"
        f"  summary:      {base}{API}/metrics?time_window=1\n"
        f"  live events:  taskiq-exporter tail --url {base}\n"
        f"  store:        {display_url(settings.database_url)}\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    producer = asyncio.create_task(_produce(tasks, args.rate))
    pointer = asyncio.create_task(_point_at_a_failure(engine, base))
    serving = asyncio.create_task(server.serve())
    try:
        if args.duration is not None:
            await asyncio.wait({serving}, timeout=args.duration)
        else:
            await serving
    finally:
        for task in (producer, pointer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server.should_exit = True
        await serving
        await _drain(broker)
        await broker.shutdown()
        await engine.dispose()
