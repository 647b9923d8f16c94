"""Hostile input, by hand: injection-looking strings in every parameter of every
endpoint (through a real uvicorn), and task data no one should send (5 MB
arguments, 10,000 levels of nesting, exception messages with lone surrogates,
NUL and raw bytes) run through the real middleware into PostgreSQL and back out
of every endpoint as valid JSON.

The generated counterpart (schemathesis) is test_api_schemathesis.py.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from taskiq import TaskiqMessage
from taskiq.abc.formatter import TaskiqFormatter
from taskiq.message import BrokerMessage
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from exporter.store.engine import make_engine
from tests.helpers.api_walk import API, http_bodies, replayed_events, strict_json
from tests.helpers.middleware import monitored_broker, sample
from tests.helpers.serving import running_service, serving

pytestmark = pytest.mark.integration

INJECTIONS = [
    "' OR 1=1 --",
    "'; DROP TABLE task_execution_logs; --",
    '"; DROP TABLE task_execution_logs; --',
    "1; SELECT pg_sleep(10)",
    "1' UNION SELECT password FROM pg_shadow --",
    "$1",
    "::text",
    "%",
    "_",
    "%%",
    "%_%",
    "\\",
    "\\'",
    "\\x00",
    "\x00",
    "a\x00b",
    "A" * 10_240,
    "日本語のタスク",
    "🔥💥",
    "\u202eevil",
    "e\u0301",
    "\ufeff",
    "../",
    "../../etc/passwd",
    "..%2F..%2F",
    '{"$ne": null}',
    "[1, 2]",
    '{"a":',
    "null",
    "true",
    "-1",
    "0x7fffffff",
    "99999999999999999999999999",
    "1e309",
    "NaN",
    "Infinity",
    " ",
    "\r\n",
    "<script>alert(1)</script>",
]
# Parameters whose every injection must be refused (none is a valid value).
STRICT = {"status", "start_date", "end_date", "page", "page_size", "cursor", "time_window", "since"}
HTTP_PARAMS: dict[str, tuple[str, ...]] = {
    f"{API}/history": (
        "task_name", "status", "start_date", "end_date", "page", "page_size", "cursor",
    ),
    f"{API}/metrics": ("time_window",),
    f"{API}/tasks": (),
    "/healthz": (),
    "/readyz": (),
    "/openapi.json": (),
    "/metrics": (),
}  # fmt: skip
# Static documents that take no parameters and ignore any.
IGNORES_QUERY = {"/metrics", "/openapi.json"}
SPECIAL_NAME = "app:50%_off\\'"  # a real task name made of LIKE and quoting characters


def leaks_traceback(body: bytes) -> bool:
    return b"Traceback (most recent call last)" in body or b'.py", line ' in body


def assert_sane(response: httpx.Response, where: str) -> None:
    """Never a server error, never a traceback; errors in the documented shape."""
    assert response.status_code < 500, (where, response.status_code, response.text[:300])
    assert not leaks_traceback(response.content), where
    if response.status_code >= 400:
        body = strict_json(response.content)
        assert isinstance(body, dict), where
        assert set(body) == {"error"}, where
        assert isinstance(body["error"], str), where


class Stash(TaskiqFormatter):
    """Hands messages over in memory, unserialized, as a pickle formatter with no
    depth limit would: taskiq's JSON formatter refuses nesting past ~255 levels,
    and the point here is what the middleware does with the 10,000 levels."""

    def __init__(self) -> None:
        self._messages: dict[str, TaskiqMessage] = {}

    def dumps(self, message: TaskiqMessage) -> BrokerMessage:
        key = uuid.uuid4().hex
        self._messages[key] = message
        return BrokerMessage(
            task_id=message.task_id,
            task_name=message.task_name,
            message=key.encode(),
            labels=message.labels,
        )

    def loads(self, message: bytes) -> TaskiqMessage:
        return self._messages.pop(message.decode())


def nested(depth: int, leaf: Any, *, as_dict: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value} if as_dict else [value]
    return value


class NoStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken too")


def raise_kind(kind: str) -> None:
    if kind == "surrogates":
        raise RuntimeError("lone \udcff\ud800 surrogates, NUL \x00 and \x1b[31mANSI\x1b[0m")
    if kind == "bytes":
        raise ValueError(b"\xff\xfe\x00 raw bytes")
    if kind == "fsdecode":
        raise FileNotFoundError(2, "No such file", os.fsdecode(b"/data/\xff\xfe.csv"))
    if kind == "decode":
        b"\xff\xfe".decode("utf-8")
    if kind == "no_str":
        raise NoStr()
    if kind == "huge":
        raise RuntimeError("\udcff\x00" * 500_000)
    if kind == "deep":
        raise ValueError(nested(10_000, "bottom"))
    raise AssertionError(kind)


KINDS = ("surrogates", "bytes", "fsdecode", "decode", "no_str", "huge", "deep")


@pytest.fixture
async def seeded(pg_store: str) -> str:
    """Rows written by the real middleware, one of them with a LIKE-ish name."""
    broker, _ = monitored_broker(pg_store)

    @broker.task(task_name="app:alpha")
    async def alpha() -> int:
        return 1

    @broker.task(task_name=SPECIAL_NAME)
    async def special() -> int:
        return 2

    await broker.startup()
    for task in (alpha, alpha, special):
        assert not (await (await task.kiq()).wait_result(timeout=10)).is_err
    await broker.shutdown()
    return pg_store


async def table_state(url: str) -> tuple[str | None, str | None, int]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            logs = (await conn.execute(text("SELECT to_regclass('task_execution_logs')"))).scalar()
            rollups = (
                await conn.execute(text("SELECT to_regclass('task_execution_rollups')"))
            ).scalar()
            rows = (await conn.execute(text("SELECT count(*) FROM task_execution_logs"))).scalar()
        return (str(logs) if logs else None, str(rollups) if rollups else None, int(rows or 0))
    finally:
        await engine.dispose()


async def test_injection_strings_in_every_parameter(
    seeded: str, unused_port: Callable[[], int]
) -> None:
    before = await table_state(seeded)
    assert before == ("task_execution_logs", "task_execution_rollups", 3)
    async with running_service(seeded) as (app, _), serving(app, unused_port()) as host:
        base = f"http://{host}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for path, params in HTTP_PARAMS.items():
                for value in INJECTIONS:
                    for name in (*params, "unknown", value):
                        response = await client.get(path, params={name: value})
                        where = f"{path}?{name[:20]!r}={value[:20]!r}"
                        assert_sane(response, where)
                        if path in IGNORES_QUERY:
                            assert response.status_code == 200, where
                            if path == "/metrics":
                                list(text_string_to_metric_families(response.text))
                            continue
                        if name not in params or name in STRICT:
                            assert response.status_code == 400, where
                            continue
                        # task_name: any text up to 255 characters is a name, matched exactly.
                        if "\x00" in value or len(value) > 255:
                            assert response.status_code == 400, where
                        else:
                            assert response.status_code == 200, where
                            body = strict_json(response.content)
                            assert (body["total_count"], body["items"]) == (0, []), where
            # The special name matches itself, and only itself: no LIKE, no escaping slip.
            body = (await client.get(f"{API}/history", params={"task_name": SPECIAL_NAME})).json()
            assert body["total_count"] == 1
            assert body["items"][0]["task_name"] == SPECIAL_NAME
            for value in INJECTIONS:
                segment = quote(value, safe="")
                by_id = await client.get(f"{API}/history/{segment}")
                assert_sane(by_id, f"id {value[:20]!r}")
                if by_id.status_code == 307:  # Starlette's redirect_slashes, same origin
                    assert value.endswith("/"), value
                    assert by_id.headers["location"].startswith(f"{base}{API}/history/"), value
                elif "/" in value:  # a decoded %2F: no such route
                    assert by_id.status_code == 404, value
                else:
                    assert by_id.status_code == 400, value[:20]
                by_task = await client.get(f"{API}/history/task/{segment}")
                assert_sane(by_task, f"task_id {value[:20]!r}")
                assert by_task.status_code in (400, 404), value[:20]
            for raw in ("../../metrics", "..%2f..%2fmetrics", "%2e%2e/%2e%2e/openapi.json"):
                assert_sane(await client.get(f"{API}/history/task/{raw}"), raw)
        for name in ("task_name", "status", "since", "token", "unknown"):
            for value in INJECTIONS:
                await check_websocket(host, name, value)
    assert await table_state(seeded) == before


async def check_websocket(host: str, name: str, value: str) -> None:
    """Refused with a 400 and the error shape (a 414 from the server for a request
    line past 8 KB), or accepted and silent: accepted
    only for a task_name (any text up to 255 characters without NUL) or a token
    (no token is configured)."""
    query = f"{quote(name)}={quote(value, safe='')}"
    where = f"events?{name}={value[:20]!r}"
    accept = name == "token" or (name == "task_name" and "\x00" not in value and len(value) <= 255)
    too_long = len(query) > 8_000
    try:
        async with connect(f"ws://{host}{API}/events?{query}", open_timeout=10) as ws:
            assert accept, f"{where}: accepted"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.2)
    except InvalidStatus as exc:
        response = exc.response
        body = bytes(response.body)
        assert not leaks_traceback(body), where
        if too_long:
            # A request line past websockets' 8 KB limit never reaches the app:
            # the server refuses it (414 Request-URI Too Long), as a reverse proxy would.
            assert response.status_code == 414, (where, response.status_code)
            return
        assert not accept, (where, response.status_code)
        assert response.status_code == 400, (where, response.status_code)
        assert set(strict_json(body)) == {"error"}, where


async def test_huge_deep_and_unencodable_task_data_come_back_as_valid_json(
    pg_store: str, unused_port: Callable[[], int]
) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    broker, mw = monitored_broker(pg_store)
    broker.with_formatter(Stash())

    @broker.task(task_name="bad:echo")
    async def echo(*args: Any, **kwargs: Any) -> int:
        return len(args) + len(kwargs)

    @broker.task(task_name="bad:boom")
    async def boom(kind: str) -> None:
        raise_kind(kind)

    blob = "x" * 5_000_000
    inputs: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((blob,), {}),
        ((), {"rows": list(range(700_000))}),  # ~5 MB of JSON
        ((nested(10_000, "bottom"),), {}),
        ((), {"deep": nested(10_000, "bottom", as_dict=True)}),
        ((), {"text": "NUL \x00, lone \udcff, bidi \u202e, 日本語", "bytes": b"\xff\xfe"}),
    ]
    await broker.startup()
    for args, kwargs in inputs:
        result = await (await echo.kiq(*args, **kwargs)).wait_result(timeout=60)
        assert not result.is_err, result.error
    for kind in KINDS:
        failed = await (await boom.kiq(kind)).wait_result(timeout=60)
        assert failed.is_err
    await broker.shutdown()
    rows = len(inputs) + len(KINDS)
    assert sample(mw, "taskiq_exporter_log_rows_dropped_total") == 0

    async with running_service(pg_store) as (app, client):
        bodies = await http_bodies(client)
        async with serving(app, unused_port()) as host:
            events = await replayed_events(host, started, rows)
    for path, body in bodies.items():
        # Only the detail of a failed attempt carries a traceback: the task's own.
        assert not leaks_traceback(body) or "/history/" in path, path
        if path != "/metrics":
            strict_json(body)
    for message in events:
        strict_json(message.encode())

    history = strict_json(bodies[f"{API}/history?page_size=200&page=1"])
    assert history["total_count"] == rows
    details = [strict_json(bodies[f"{API}/history/{item['id']}"]) for item in history["items"]]
    params = [d["params"] for d in details if d["task_name"] == "bad:echo"]
    truncated = [p for p in params if isinstance(p, dict) and p.get("_truncated")]
    assert len(truncated) == 2
    assert all(p["original_bytes"] >= 4_000_000 for p in truncated)
    assert sum(b"<max depth>" in orjson.dumps(p) for p in params) == 2
    assert max(len(b) for p, b in bodies.items() if "/history/" in p) < 200_000
    failures = [d for d in details if d["task_name"] == "bad:boom"]
    assert len(failures) == len(KINDS)
    for failure in failures:
        assert failure["status"] == "failed"
        assert failure["error_message"]
        assert "\x00" not in failure["error_message"]
        assert "\x00" not in (failure["error_traceback"] or "")
        assert len(failure["error_message"].encode()) < 2_200
    messages = " ".join(f["error_message"] for f in failures)
    assert "UnicodeDecodeError" in messages
    assert "NoStr" in messages
    assert "FileNotFoundError" in messages


async def log_with_hostile_task_ids(url: str) -> tuple[int, float]:
    """Twenty ordinary tasks after two whose client chose an unstorable task id
    (ids come off the wire: any producer can pick them). Returns the ordinary rows
    stored and the rows counted as dropped."""
    broker, mw = monitored_broker(url, shutdown_flush_timeout_seconds=3)

    @broker.task(task_name="ids:job")
    async def job(i: int) -> int:
        return i

    await broker.startup()
    for task_id in ("poison-\udcff", "poison-\x00"):
        result = await (await job.kicker().with_task_id(task_id).kiq(0)).wait_result(timeout=10)
        assert not result.is_err
    for i in range(20):
        ordinary = job.kicker().with_task_id(f"ids-{i}")
        assert not (await (await ordinary.kiq(i)).wait_result(timeout=10)).is_err
    await broker.shutdown()
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            query = text("SELECT count(*) FROM task_execution_logs WHERE task_id LIKE 'ids-%'")
            stored = int((await conn.execute(query)).scalar() or 0)
    finally:
        await engine.dispose()
    return stored, sample(mw, "taskiq_exporter_log_rows_dropped_total")


async def test_an_unstorable_task_id_costs_only_its_own_row_on_postgresql(pg_store: str) -> None:
    stored, dropped = await log_with_hostile_task_ids(pg_store)
    assert stored == 20
    assert dropped <= 2  # the surrogate is escaped and stored; NUL text is refused


async def test_an_unstorable_task_id_costs_only_its_own_row_on_sqlite(sqlite_store: str) -> None:
    stored, dropped = await log_with_hostile_task_ids(sqlite_store)
    assert stored == 20
    assert dropped <= 2


async def test_tail_prints_hostile_event_text_inert(
    pg_store: str, unused_port: Callable[[], int]
) -> None:
    from exporter.cli.tail import format_event

    started = datetime.now(UTC) - timedelta(seconds=1)
    broker, _ = monitored_broker(pg_store)

    @broker.task(task_name="tty:job")
    async def job() -> None:
        raise RuntimeError("\x1b]0;owned\x07\x1b[2J\r\n12:00:00.000  success  forged line")

    await broker.startup()
    await (await job.kicker().with_task_id("id-\x1b[8m").kiq()).wait_result(timeout=10)
    await broker.shutdown()
    async with running_service(pg_store) as (app, _), serving(app, unused_port()) as host:
        (message,) = await replayed_events(host, started, 1)
    line = format_event(orjson.loads(message), colour=False)
    assert "failed" in line
    controls = [c for c in line if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0]
    assert not controls, repr(line)
