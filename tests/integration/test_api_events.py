"""WS /api/v1/monitoring/events: live events (in-process hub and PostgreSQL NOTIFY from
another process), filters, replay with ?since=, auth."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from exporter.events import EventHub, TaskEvent
from exporter.middleware.rows import STATUS, new_row
from exporter.store.engine import make_engine
from exporter.store.pg_admin import asyncpg_dsn
from exporter.store.pg_writer import PostgresRowStore
from tests.support import insert_logs, log_row, running_service, serving

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
        log_row(
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


async def test_listener_survives_a_dropped_connection(pg_store: str) -> None:
    hub = EventHub()
    async with running_service(pg_store, hub=hub) as (app, _client):
        listener = app.state.listener
        await asyncio.wait_for(listener.connected.wait(), 10)
        subprocess.run(
            [
                "psql",
                asyncpg_dsn(pg_store),
                "-c",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'taskiq-exporter-listener'",
            ],
            check=False,
            capture_output=True,
        )
        listener.check_interval = 0.1
        deadline = time.monotonic() + 20
        while listener.connected.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.wait_for(listener.connected.wait(), 20)


async def test_the_listener_reads_nothing_while_nobody_subscribes(
    pg_store: str, unused_port: Callable[[], int]
) -> None:
    store = PostgresRowStore(make_engine(pg_store))

    async def write(task_id: str) -> datetime:
        row = new_row(task_id, 1, "app:quiet", 1_700_000_000.0)
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
