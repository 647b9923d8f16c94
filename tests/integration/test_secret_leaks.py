"""A secret redacted at write time never comes back out: tasks whose arguments hold
passwords, tokens, API keys, authorization headers and cookies at several
depths run through the real middleware; then every body of every endpoint
(history pages, detail by id and by task_id, the summaries, /metrics, the events
WebSocket, live and replayed) and the stored rows themselves are searched for
the distinctive values."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from websockets.asyncio.client import connect

from exporter.app import create_app
from exporter.events import EventHub
from exporter.settings import ExporterSettings
from exporter.store.engine import make_engine
from tests.helpers.api_walk import API, http_bodies, replayed_events
from tests.helpers.middleware import monitored_broker
from tests.helpers.serving import serving

pytestmark = pytest.mark.integration
VISIBLE = f"visible-{uuid.uuid4().hex}"  # not a secret: proves the bodies carry params


class Secrets:
    def __init__(self) -> None:
        self.values: list[str] = []

    def __call__(self, tag: str) -> str:
        value = f"S3CRET{tag.upper()}{uuid.uuid4().hex}"
        self.values.append(value)
        return value


def nest(depth: int, inner: dict[str, Any]) -> dict[str, Any]:
    value = inner
    for i in range(depth):
        value = {f"level{i}": value}
    return value


def arguments(secret: Secrets) -> tuple[list[Any], dict[str, Any]]:
    args: list[Any] = [{"password": secret("arg")}, [{"Authorization": f"Bearer {secret('ah')}"}]]
    kwargs: dict[str, Any] = {
        "password": secret("pw"),
        "token": secret("tok"),
        "api_key": secret("key"),
        "authorization": f"Basic {secret('basic')}",
        "cookie": secret("cookie"),
        "user": VISIBLE,
        "config": {
            "db": {"DB_PASSWORD": secret("dbpw"), "host": "db.internal"},
            "headers": {"X-Api-Key": secret("xkey"), "Set-Cookie": f"sid={secret('sid')}"},
        },
        "items": [{"refresh_token": secret("refresh")}, [[{"apiKey": secret("camel")}]]],
        "deep": nest(20, {"client_secret": secret("deep20"), "cookie": secret("deep20c")}),
        "deeper": nest(29, {"accessToken": secret("deep29")}),
        "beyond": nest(40, {"password": secret("deep40")}),  # past the encoder's depth cap
        "private_key": {"pem": secret("pem")},
        "bytes_token": secret("btok").encode(),
    }
    return args, kwargs


async def stored_text(url: str) -> str:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT task_name, task_id, params, error_message, error_traceback "
                     "FROM task_execution_logs")
            )  # fmt: skip
            return "\n".join(repr(tuple(row)) for row in rows)
    finally:
        await engine.dispose()


async def test_no_endpoint_returns_a_redacted_secret(
    store_url: str, unused_port: Callable[[], int]
) -> None:
    secret = Secrets()
    # On SQLite the writer publishes live events to the service in-process; on
    # PostgreSQL they go through NOTIFY (see test_fault_service for its state).
    hub = None if store_url.startswith("postgresql") else EventHub()
    broker, mw = monitored_broker(store_url, hub=hub)

    @broker.task(task_name="leak:ok")
    async def ok(*args: Any, **kwargs: Any) -> int:
        return len(args) + len(kwargs)

    @broker.task(task_name="leak:fail")
    async def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("failed on purpose")

    settings = ExporterSettings(database_url=store_url, maintenance=False)
    app = create_app(settings, registry=mw.registry, hub=hub)
    started = datetime.now(UTC) - timedelta(seconds=1)
    live: list[str] = []
    async with serving(app, unused_port()) as host:
        async with connect(f"ws://{host}{API}/events", max_size=None) as ws:
            await broker.startup()
            for task in (ok, fail, ok):
                args, kwargs = arguments(secret)
                await (await task.kiq(*args, **kwargs)).wait_result(timeout=30)
            big_args, big_kwargs = arguments(secret)
            big_kwargs["blob"] = "x" * 5_000_000  # stored as a truncated preview
            await (await ok.kiq(*big_args, **big_kwargs)).wait_result(timeout=60)
            await broker.shutdown()
            if hub is not None:
                while len([m for m in live if '"success"' in m or '"failed"' in m]) < 4:
                    live.append(str(await asyncio.wait_for(ws.recv(), 15)))
        async with httpx.AsyncClient(base_url=f"http://{host}", timeout=30) as client:
            bodies = {path: body.decode() for path, body in (await http_bodies(client)).items()}
        replayed = await replayed_events(host, started, 4)

    assert len(secret.values) == 4 * 18
    details = [body for path, body in bodies.items() if "/history/" in path]
    assert len(details) == 8
    # Positive control: the searched bodies do carry the arguments (the small ones in
    # full; the 5 MB one as its preview).
    assert sum(VISIBLE in body for body in details) == 8
    assert "***" in bodies[f"{API}/history?page_size=200&page=1"]
    everything = {
        **bodies,
        **{f"live event {i}": m for i, m in enumerate(live)},
        **{f"replayed event {i}": m for i, m in enumerate(replayed)},
        "the stored rows": await stored_text(store_url),
    }
    for where, body in everything.items():
        found = [value for value in secret.values if value in body]
        assert not found, f"{where} returns {len(found)} secrets, e.g. {found[0]}"
