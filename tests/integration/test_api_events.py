"""WS /api/v1/monitoring/events: live events (in-process hub and PostgreSQL NOTIFY from
another process), filters, replay with ?since=, auth."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from exporter.app import create_app
from exporter.events import EventHub, TaskEvent
from exporter.rows import PENDING, STATUS, log_row
from exporter.service.listener import APPLICATION_NAME
from exporter.settings import ExporterSettings
from exporter.store.engine import make_engine
from exporter.store.pg_admin import asyncpg_dsn
from exporter.store.pg_writer import PostgresRowStore
from tests.helpers.rows import insert_logs, stored_row
from tests.helpers.serving import running_service, serving

pytestmark = pytest.mark.integration
PATH = "/api/v1/monitoring/events"


def event(status: str, task_name: str = "app:job", task_id: str = "t1") -> TaskEvent:
    now = datetime.now(UTC).isoformat()
    return TaskEvent(task_name, status, now, task_id, 1, 3.5, None, now)


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def test_in_process_events_with_filters(
    sqlite_store: str, unused_port: Callable[[], int]
) -> None:
    hub = EventHub()
    async with (
        running_service(sqlite_store, hub=hub) as (app, _client),
        serving(app, unused_port()) as host,
        connect(f"ws://{host}{PATH}") as everything,
        connect(f"ws://{host}{PATH}?status=failed&task_name=app:job") as failed_only,
    ):
        while hub.subscribers < 2:
            await asyncio.sleep(0.01)
        hub.publish([event("running"), event("failed"), event("failed", task_name="other")])
        first = await recv(everything)
        assert first["type"] == "task_event"
        assert first["status"] == "running"
        assert set(first["data"]) >= {"task_id", "attempt", "duration_ms", "error_message"}
        got = await recv(failed_only)
        assert (got["status"], got["task_name"]) == ("failed", "app:job")
        hub.publish([event("failed", task_id="t2")])
        assert (await recv(failed_only))["data"]["task_id"] == "t2"


async def test_invalid_filter_is_refused(sqlite_store: str, unused_port: Callable[[], int]) -> None:
    async with running_service(sqlite_store) as (app, _client), serving(app, unused_port()) as host:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://{host}{PATH}?status=bogus"):
                pass
        assert refused.value.response.status_code == 400


async def test_websocket_auth(sqlite_store: str, unused_port: Callable[[], int]) -> None:
    async with (
        running_service(sqlite_store, api_token="tok") as (app, _client),
        serving(app, unused_port()) as host,
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://{host}{PATH}"):
                pass
        assert refused.value.response.status_code == 401
        headers = {"Authorization": "Bearer tok"}
        async with connect(f"ws://{host}{PATH}", additional_headers=headers):
            pass


async def test_reconnect_replays_what_was_missed(
    store_url: str, unused_port: Callable[[], int]
) -> None:
    base = datetime.now(UTC) - timedelta(minutes=10)
    rows = [
        stored_row(
            task_id=f"r{i}",
            created_at=base + timedelta(seconds=i),
            updated_at=base + timedelta(seconds=i),
        )
        for i in range(5)
    ]
    await insert_logs(store_url, rows)
    since = (base + timedelta(seconds=2)).isoformat()
    async with (
        running_service(store_url, hub=EventHub()) as (app, _client),
        serving(app, unused_port()) as host,
        connect(f"ws://{host}{PATH}?since={since.replace('+', '%2B')}") as ws,
    ):
        got = [await recv(ws) for _ in range(3)]
    assert [m["data"]["task_id"] for m in got] == ["r2", "r3", "r4"]
    assert got[0]["data"]["updated_at"] == (base + timedelta(seconds=2)).isoformat()


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    import asyncpg

    async def main(dsn):
        # As exporter.store.pg_writer does: rows stamped with the batch's updated_at,
        # and that stamp NOTIFYed in the same transaction.
        conn = await asyncpg.connect(dsn)
        now = datetime.now(UTC)
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO task_execution_logs (task_name, status, task_id, attempt, "
                "created_at, started_at, completed_at, updated_at, duration_ms) "
                "VALUES ($1, $2, $3, 1, $4, $4, $4, $4, 12.5)",
                "app:remote", "success", "remote-1", now)
            await conn.execute("SELECT pg_notify('taskiq_exporter_events', $1)",
                               now.isoformat())
        await conn.close()

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_event_from_another_process_reaches_the_client(
    pg_store: str, unused_port: Callable[[], int]
) -> None:
    async with running_service(pg_store) as (app, _client):
        await asyncio.wait_for(app.state.listener.connected.wait(), 10)
        async with serving(app, unused_port()) as host, connect(f"ws://{host}{PATH}") as ws:
            hub = app.state.exporter.hub
            while hub.subscribers < 1:
                await asyncio.sleep(0.01)
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", WORKER, asyncpg_dsn(pg_store)
            )
            message = await recv(ws, timeout=15)
            assert await proc.wait() == 0
    assert message["task_name"] == "app:remote"
    assert message["data"]["task_id"] == "remote-1"
    assert time.perf_counter() - started < 10


async def listener_pids(conn: asyncpg.Connection, dbname: str) -> list[int]:
    """The backends of the service's LISTEN connection on this test's database."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
        APPLICATION_NAME,
        dbname,
    )
    return sorted(row["pid"] for row in rows)


async def test_listener_survives_a_dropped_connection(
    pg_store: str, unused_port: Callable[[], int]
) -> None:
    """The listener's backend is terminated; a new one LISTENs, and an event written
    afterwards reaches a subscriber through it."""
    dbname = make_url(pg_store).database or ""
    store = PostgresRowStore(make_engine(pg_store))
    app = create_app(ExporterSettings(database_url=pg_store, maintenance=False))
    admin = await asyncpg.connect(asyncpg_dsn(pg_store))
    try:
        async with serving(app, unused_port()) as host:
            listener = app.state.listener
            await asyncio.wait_for(listener.connected.wait(), 10)
            (old,) = await listener_pids(admin, dbname)
            # No subscriber yet: the reconnect's gap fill reads nothing, so the event
            # below can only come through the new connection's NOTIFY.
            assert app.state.exporter.hub.subscribers == 0
            terminated = await admin.fetchval("SELECT pg_terminate_backend($1)", old)
            assert terminated is True
            deadline = time.monotonic() + 20
            while (pids := await listener_pids(admin, dbname)) in ([], [old]):
                assert time.monotonic() < deadline, f"no new listener backend: {pids}"
                await asyncio.sleep(0.05)
            (new,) = pids
            assert new != old
            await asyncio.wait_for(listener.connected.wait(), 20)
            async with connect(f"ws://{host}{PATH}") as ws:
                while app.state.exporter.hub.subscribers < 1:
                    await asyncio.sleep(0.01)
                row = log_row("after-drop", 1, "app:back", PENDING, created_at=1_700_000_000.0)
                row[STATUS] = "success"
                await store.write([row], datetime.now(UTC))
                message = await recv(ws, timeout=10)
            assert (message["task_name"], message["status"]) == ("app:back", "success")
            assert message["data"]["task_id"] == "after-drop"
            assert await listener_pids(admin, dbname) == [new]
    finally:
        await admin.close()
        await store.close()


async def test_the_listener_reads_nothing_while_nobody_subscribes(
    pg_store: str, unused_port: Callable[[], int]
) -> None:
    store = PostgresRowStore(make_engine(pg_store))

    async def write(task_id: str) -> datetime:
        row = log_row(task_id, 1, "app:quiet", PENDING, created_at=1_700_000_000.0)
        row[STATUS] = "success"
        stamp = datetime.now(UTC)
        await store.write([row], stamp)
        return stamp

    try:
        async with running_service(pg_store) as (app, _client), serving(app, unused_port()) as host:
            # uvicorn ran the lifespan again: its listener and hub are the live ones.
            listener = app.state.listener
            await asyncio.wait_for(listener.connected.wait(), 10)
            unseen = await write("unseen-1")
            deadline = time.monotonic() + 10
            while listener.last_seen != unseen and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert listener.last_seen == unseen  # the notification arrived ...
            assert listener.rows_read == 0  # ... and nothing was read for it
            async with connect(f"ws://{host}{PATH}") as ws:
                while app.state.exporter.hub.subscribers < 1:
                    await asyncio.sleep(0.01)
                await write("seen-1")
                message = await recv(ws, timeout=10)
            assert message["data"]["task_id"] == "seen-1"
            assert listener.rows_read == 1
    finally:
        await store.close()
