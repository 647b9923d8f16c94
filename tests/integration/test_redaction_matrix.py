"""Secrets planted in every shape a task can be given or can raise them, through the
real middleware and store: none may reach the stored row, any HTTP endpoint, any
WebSocket event (live or replayed) or the exporter's own log output.

Shapes: positional and keyword arguments, nested dicts and lists, lists of pairs,
a dataclass and a pydantic model, a URL with a password, Bearer and Basic
credentials, a PEM private key, key=value text, and failures whose message,
cause (``raise ... from``) or note (``add_note``) repeats a secret."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pydantic
import pytest
from taskiq import InMemoryBroker
from websockets.asyncio.client import connect

from exporter import MonitoringMiddleware
from exporter.app import create_app
from exporter.events import EventHub
from exporter.settings import ExporterSettings
from tests.helpers.api_walk import API, http_bodies, replayed_events
from tests.helpers.middleware import monitored_broker
from tests.helpers.serving import serving
from tests.integration.test_secret_leaks import stored_text

pytestmark = pytest.mark.integration
VISIBLE = f"visible-{uuid.uuid4().hex}"


class Secrets:
    """Distinctive values, each remembered so that every output can be searched."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def __call__(self, tag: str) -> str:
        value = f"S3C{tag}{uuid.uuid4().hex[:20]}"
        self.values.append(value)
        return value


@dataclasses.dataclass
class DbConfig:
    host: str
    password: str


class ApiClient(pydantic.BaseModel):
    base_url: str
    client_secret: str


def pem(body: str) -> str:
    lines = ["-----BEGIN RSA PRIVATE KEY-----", f"MIIEow{body}", f"AAAA{body}=="]
    return "\n".join([*lines, "-----END RSA PRIVATE KEY-----", ""])


def make_broker(
    url: str, hub: EventHub | None
) -> tuple[InMemoryBroker, MonitoringMiddleware, dict[str, Any]]:
    broker, mw = monitored_broker(url, hub=hub)

    @broker.task(task_name="matrix:login")
    async def login(user: str, password: str, note: str = "") -> str:
        return user

    @broker.task(task_name="matrix:echo")
    async def echo(*args: Any, **kwargs: Any) -> int:
        return len(args) + len(kwargs)

    @broker.task(task_name="matrix:fail_repeat")
    async def fail_repeat(user: str, password: str) -> None:
        raise RuntimeError(f"login failed for {user} with {password}")

    @broker.task(task_name="matrix:fail_chain")
    async def fail_chain(user: str, pwd: str) -> None:
        try:
            raise ConnectionError(f"server refused {pwd!r}")
        except ConnectionError as exc:
            raise RuntimeError(f"could not log {user} in") from exc

    @broker.task(task_name="matrix:fail_note")
    async def fail_note(api_token: str) -> None:
        error = ValueError("the API said no")
        error.add_note(f"tried with token {api_token}")
        raise error

    @broker.task(task_name="matrix:fail_pattern")
    async def fail_pattern(target: str, config: dict[str, Any]) -> None:
        raise ConnectionError(f"cannot reach {target} with {config}")

    tasks = {
        "login": login,
        "echo": echo,
        "fail_repeat": fail_repeat,
        "fail_chain": fail_chain,
        "fail_note": fail_note,
        "fail_pattern": fail_pattern,
    }
    return broker, mw, tasks


def calls(secret: Secrets) -> list[tuple[str, list[Any], dict[str, Any], list[str]]]:
    """(task, args, kwargs, the paths expected in "_redacted")."""
    basic = base64.b64encode(f"ann:{secret('basic')}".encode()).decode()
    return [
        ("login", ["alice", secret("pos")], {"note": VISIBLE}, ["args[1]"]),
        ("login", [], {"user": "alice", "password": secret("kw")}, ["kwargs.password"]),
        ("echo", [{"db": {"db_pass": secret("nested"), "host": "db1"}}], {"user": VISIBLE},
         ["args[0].db.db_pass"]),
        ("echo", [], {"servers": [{"credentials": [secret("inlist")]}, {"pwd": secret("pwd")}]},
         ["kwargs.servers[0].credentials", "kwargs.servers[1].pwd"]),
        ("echo", [], {"headers": [["Authorization", f"Bearer {secret('pairhdr')}"],
                                  ["Accept", "text/plain"]],
                      "fields": [("password", secret("pairtuple"))]},
         ["kwargs.headers[0][1]", "kwargs.fields[0][1]"]),
        ("echo", [], {"db": DbConfig("db1", secret("dataclass")),
                      "clients": [ApiClient(base_url="https://a", client_secret=secret("model"))]},
         ["kwargs.db.password", "kwargs.clients[0].client_secret"]),
        ("echo", [f"postgresql://app:{secret('urlpw')}@db:5432/app"], {}, ["args[0]"]),
        ("echo", [], {"header": f"Bearer {secret('bearer')}", "basic": f"Basic {basic}",
                      "curl": f"curl -H 'X-Api-Key: {secret('curl')}' https://x"},
         ["kwargs.header", "kwargs.basic", "kwargs.curl"]),
        ("echo", [], {"material": pem(secret("pem"))}, ["kwargs.material"]),
        ("echo", [], {"conninfo": f"host=db user=app password={secret('libpq')} dbname=x",
                      "callback": f"https://x.io/cb?access_token={secret('query')}&state=1",
                      "X-Auth-Token": secret("header"), "clientSecret": secret("camel")},
         ["kwargs.conninfo", "kwargs.callback", "kwargs.X-Auth-Token", "kwargs.clientSecret"]),
        ("fail_repeat", ["alice", secret("repeat")], {}, ["args[1]"]),
        ("fail_chain", ["alice", secret("cause")], {}, ["args[1]"]),
        ("fail_note", [], {"api_token": secret("note")}, ["kwargs.api_token"]),
        ("fail_pattern", [f"amqp://guest:{secret('errurl')}@mq/",
                          {"password": secret("errcfg"), "user": "ann"}], {},
         ["args[0]", "args[1].password"]),
    ]  # fmt: skip


async def test_no_planted_secret_comes_out_anywhere(
    store_url: str, unused_port: Callable[[], int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter")
    secret = Secrets()
    hub = None if store_url.startswith("postgresql") else EventHub()
    broker, mw, tasks = make_broker(store_url, hub)
    planned = calls(secret)
    settings = ExporterSettings(database_url=store_url, maintenance=False)
    app = create_app(settings, registry=mw.registry, hub=hub)
    started = datetime.now(UTC) - timedelta(seconds=1)
    live: list[str] = []
    task_ids: dict[str, list[str]] = {}
    async with serving(app, unused_port()) as host:
        async with connect(f"ws://{host}{API}/events", max_size=None) as ws:
            await broker.startup()
            for name, args, kwargs, paths in planned:
                sent = await tasks[name].kiq(*args, **kwargs)
                await sent.wait_result(timeout=30)
                task_ids[sent.task_id] = paths
            await broker.shutdown()
            # (From the in-process hub on SQLite, through NOTIFY on PostgreSQL.)
            while sum('"success"' in m or '"failed"' in m for m in live) < len(planned):
                live.append(str(await asyncio.wait_for(ws.recv(), 15)))
        async with httpx.AsyncClient(base_url=f"http://{host}", timeout=30) as client:
            bodies = {path: body.decode() for path, body in (await http_bodies(client)).items()}
        replayed = await replayed_events(host, started, len(planned))

    everything = {
        **bodies,
        **{f"live event {i}": m for i, m in enumerate(live)},
        **{f"replayed event {i}": m for i, m in enumerate(replayed)},
        "the stored rows": await stored_text(store_url),
        "the exporter's log": "\n".join(
            r.getMessage() + (r.exc_text or "")
            for r in caplog.records
            if r.name.startswith("exporter")
        ),
    }
    for where, body in everything.items():
        found = [value for value in secret.values if value in body]
        assert not found, f"{where} holds {len(found)} secrets, e.g. {found[0]}"

    # Positive controls: the bodies carry the arguments, the failures their text,
    # and each row says what was masked.
    history = json.loads(bodies[f"{API}/history?page_size=200&page=1"])
    assert history["total_count"] == len(planned)
    for item in history["items"]:
        assert item["params"]["_redacted"] == task_ids[item["task_id"]], item["task_name"]
    messages = sorted(i["error_message"] for i in history["items"] if i["status"] == "failed")
    assert messages == [
        "ConnectionError: cannot reach amqp://guest:***@mq/"
        " with {'password': '***', 'user': 'ann'}",
        "RuntimeError: could not log alice in",
        "RuntimeError: login failed for alice with ***",
        "ValueError: the API said no",
    ]
    assert sum(VISIBLE in body for body in bodies.values()) >= 2
    details = [json.loads(b) for p, b in bodies.items() if p.startswith(f"{API}/history/")]
    tracebacks = "\n".join(d.get("error_traceback") or "" for d in details)
    assert "Traceback (most recent call last)" in tracebacks
    assert "The above exception was the direct cause" in tracebacks
    assert "tried with token ***" in tracebacks
    assert "amqp://guest:***@mq/" in tracebacks
