"""``taskiq-exporter demo``: the whole product in one process, nothing to install.

The seed's ten task types run on an in-memory broker with the monitoring
middleware, the embedded SQLite store and the service on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
from pathlib import Path
from typing import Any

DEFAULT_DB = Path(".taskiq-exporter") / "demo.sqlite3"


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run a demo worker, store and service in one process")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--database-url", help=f"default: sqlite file {DEFAULT_DB}")
    parser.add_argument("--rate", type=float, default=10.0, help="tasks sent per second")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.set_defaults(run=run)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def run(args: argparse.Namespace, _extra: list[str]) -> int:
    if not _port_free(args.host, args.port):
        print(
            f"taskiq-exporter demo: {args.host}:{args.port} is already in use; "
            "choose another with --port",
            file=sys.stderr,
        )
        return 2
    # taskiq logs every start and every failure with its traceback: the demo
    # shows them through the history API instead.
    logging.getLogger("taskiq").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)
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


async def _demo(args: argparse.Namespace) -> None:
    import uvicorn
    from taskiq import InMemoryBroker
    from taskiq.middlewares import SimpleRetryMiddleware

    from exporter import MonitoringMiddleware
    from exporter.demo.tasks import register as register_tasks
    from exporter.events import EventHub
    from exporter.service.app import create_app
    from exporter.settings import ExporterSettings

    url = args.database_url or f"sqlite+aiosqlite:///{DEFAULT_DB.resolve()}"
    settings = ExporterSettings(database_url=url, host=args.host, port=args.port)
    hub = EventHub()
    monitoring = MonitoringMiddleware(settings=settings, hub=hub)
    broker = InMemoryBroker(max_async_tasks=200).with_middlewares(
        SimpleRetryMiddleware(default_retry_count=3), monitoring
    )
    tasks = register_tasks(broker)
    await broker.startup()  # creates the embedded store's schema
    app = create_app(settings, registry=monitoring.registry, hub=hub)
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    )
    base = f"http://{args.host}:{args.port}"
    print(
        "taskiq-exporter demo: ten task types running, a few fail and one retries.\n"
        f"  metrics:      {base}/metrics\n"
        f"  history:      {base}/api/v1/monitoring/history?status=failed&page_size=5\n"
        f"  one record:   {base}/api/v1/monitoring/history/1   (full traceback)\n"
        f"  summary:      {base}/api/v1/monitoring/metrics?time_window=1\n"
        f"  live events:  taskiq-exporter tail --url ws://{args.host}:{args.port}\n"
        f"  store:        {url}\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    producer = asyncio.create_task(_produce(tasks, args.rate))
    serving = asyncio.create_task(server.serve())
    try:
        if args.duration is not None:
            await asyncio.wait({serving}, timeout=args.duration)
        else:
            await serving
    finally:
        producer.cancel()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await producer
        await serving
        await broker.shutdown()
