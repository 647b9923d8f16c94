"""Reads from a streaming replica (TASKIQ_EXPORTER_READ_DATABASE_URL), against a real
hot standby of the test PostgreSQL (tests/helpers/replica.py).

The proof that a read came from the replica: with the replica's replay paused, a
row committed on the primary is there (the writer and the listener see it) while
the API does not show it; once replay resumes, it appears, within the lag /readyz
measured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect

from exporter.rows import PENDING, STATUS, log_row
from exporter.service.reads import BOTH_DOWN, READ_FROM
from exporter.store.engine import make_engine
from exporter.store.pg_admin import asyncpg_dsn
from exporter.store.pg_writer import PostgresRowStore
from tests.conftest import PG_SERVER
from tests.helpers.replica import Replica, ReplicaUnavailable, streaming_replica
from tests.helpers.rows import insert_logs, stored_row
from tests.helpers.serving import running_service, serving
from tests.helpers.tcp_proxy import TcpProxy
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration
API = "/api/v1/monitoring"
READ_FROM_KEY = READ_FROM.lower()
LAG = re.compile(r"^taskiq_exporter_replica_lag_seconds (\S+)$", re.M)


@pytest.fixture(scope="session")
def replica() -> Iterator[Replica]:
    """One hot standby of the test server for the session; the databases the tests
    create on the primary reach it by streaming."""
    try:
        with streaming_replica(PG_SERVER) as running:
            yield running
    except ReplicaUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(
                f"a streaming replica of the test PostgreSQL is required with CI set: {exc}"
            )
        pytest.skip(f"cannot start a streaming replica of the test PostgreSQL: {exc}")


@pytest.fixture
def replica_url(pg_store: str, replica: Replica) -> str:
    """The replica's URL of the test's database, once the replica has replayed its
    creation and its migrations."""
    replica.wait_caught_up()
    return replica.url(make_url(pg_store).database or "")


async def on_primary(url: str, task_id: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM task_execution_logs WHERE task_id = $1", task_id
        )
        return count
    finally:
        await conn.close()


def row(task_id: str, task_name: str = "app:seen", minutes_ago: float = 5) -> dict[str, object]:
    return stored_row(
        task_id=task_id,
        task_name=task_name,
        created_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
    )


async def history_ids(client: httpx.AsyncClient, **params: str) -> tuple[set[str], str | None]:
    response = await client.get(f"{API}/history", params=params)
    assert response.status_code == 200, response.text
    ids = {item["task_id"] for item in response.json()["items"]}
    return ids, response.headers.get(READ_FROM_KEY)


def gauge(text: str) -> float | None:
    found = LAG.search(text)
    return float(found.group(1)) if found else None


async def test_every_read_path_reads_the_replica(
    pg_store: str, replica: Replica, replica_url: str
) -> None:
    await insert_logs(pg_store, [row("old-1")])
    replica.wait_caught_up()
    async with running_service(pg_store, read_database_url=replica_url) as (_app, client):
        assert await history_ids(client) == ({"old-1"}, "replica")
        with replica.replay_paused():
            await insert_logs(pg_store, [row("new-1", task_name="app:new")])
            assert await on_primary(pg_store, "new-1") == 1
            # On the primary, not yet on the replica: no read path shows it.
            assert await history_ids(client) == ({"old-1"}, "replica")
            attempts = await client.get(f"{API}/history/task/new-1")
            assert attempts.status_code == 404
            names = await client.get(f"{API}/tasks")
            assert names.json() == {"task_names": ["app:seen"]}
            assert names.headers[READ_FROM_KEY] == "replica"
            summary = await client.get(f"{API}/metrics", params={"time_window": "1"})
            assert [m["task_name"] for m in summary.json()["metrics"]] == ["app:seen"]
            assert summary.headers[READ_FROM_KEY] == "replica"
        replica.wait_caught_up()
        assert await history_ids(client) == ({"old-1", "new-1"}, "replica")
        (item,) = (await client.get(f"{API}/history/task/new-1")).json()["attempts"]
        detail = await client.get(f"{API}/history/{item['id']}")
        assert detail.status_code == 200
        assert detail.headers[READ_FROM_KEY] == "replica"
        assert (await client.get(f"{API}/tasks")).json()["task_names"] == ["app:new", "app:seen"]
        scrape = (await client.get("/metrics")).text
        assert 'taskiq_exporter_store_reads_total{database="primary"} 0.0' in scrape
        assert 'taskiq_exporter_store_reads_total{database="replica"} 9.0' in scrape


async def test_a_row_appears_within_the_measured_lag(
    pg_store: str, replica: Replica, replica_url: str
) -> None:
    async with running_service(pg_store, read_database_url=replica_url) as (_app, client):
        caught_up = {
            "reachable": True,
            "caught_up": True,
            "lag_seconds": 0.0,
            "detail": "caught up",
        }

        async def ready_and_caught_up() -> bool:
            # Other tests write to the same server: a check may find the replica a few
            # milliseconds behind.
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()["reads_from"]) == (200, "replica")
            return bool(ready.json()["replica"] == caught_up)

        await eventually(ready_and_caught_up, "a check finds the replica caught up")
        ready = await client.get("/readyz")
        assert re.search(r'"lag_seconds":\d+\.\d+', ready.text)  # a JSON float, as every number
        lag = gauge((await client.get("/metrics")).text)
        assert lag is not None
        assert 0 <= lag < 5

        with replica.replay_paused():
            await insert_logs(pg_store, [row("lagging-1")])
            written = time.monotonic()  # the commit happened before this
            await asyncio.sleep(0.5)
            asked = time.monotonic()
            body = (await client.get("/readyz")).json()
            assert body["status"] == "ready"
            assert body["replica"]["caught_up"] is False
            assert "replay is paused" in body["replica"]["detail"]
            # The row is missing, so the lag (an upper bound) covers its age at least.
            assert body["replica"]["lag_seconds"] >= asked - written
            scraped = gauge((await client.get("/metrics")).text)
            assert scraped is not None
            assert scraped >= asked - written
            assert (await history_ids(client))[0] == set()

        # Each check promises the rows committed more than `lag` seconds before it:
        # once a check covers the row's commit, the history must show it.
        deadline = time.monotonic() + 60
        while True:
            asked = time.monotonic()
            lag = (await client.get("/readyz")).json()["replica"]["lag_seconds"]
            ids, source = await history_ids(client)
            assert source == "replica"
            if lag is not None and asked - lag >= written:
                assert ids == {"lagging-1"}, f"lag {lag} s promised the row, the replica lacks it"
                break
            assert time.monotonic() < deadline, "the replica never caught up"
            await asyncio.sleep(0.05)
        lag = gauge((await client.get("/metrics")).text)
        assert lag is not None
        assert lag < 5


async def test_a_replica_that_goes_down_falls_back_to_the_primary(
    pg_store: str, replica: Replica, replica_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    await insert_logs(pg_store, [row("r-1")])
    replica.wait_caught_up()
    with TcpProxy(
        "127.0.0.1", replica.port, database=make_url(replica_url).database or ""
    ) as proxy:
        # A password in the URL (trust authentication ignores it) must never be logged.
        url = proxy.url().replace("postgres@", "postgres:pw-never-logged@")
        async with running_service(pg_store, read_database_url=url) as (_app, client):
            assert await history_ids(client) == ({"r-1"}, "replica")
            proxy.cut()
            for _ in range(3):
                assert await history_ids(client) == ({"r-1"}, "primary")
            for path in ("/history/task/r-1", "/tasks", "/metrics"):
                answer = await client.get(API + path)
                assert (answer.status_code, answer.headers[READ_FROM_KEY]) == (200, "primary")
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            body = ready.json()
            assert (body["status"], body["reads_from"]) == ("ready", "primary")
            assert body["replica"]["reachable"] is False
            assert body["replica"]["detail"].startswith("unreachable")
            scrape = (await client.get("/metrics")).text
            assert "taskiq_exporter_replica_up 0.0" in scrape
            assert gauge(scrape) is None
            assert 'taskiq_exporter_store_reads_total{database="primary"} 6.0' in scrape

            proxy.restore()
            body = (await client.get("/readyz")).json()
            assert (body["reads_from"], body["replica"]["reachable"]) == ("replica", True)
            assert await history_ids(client) == ({"r-1"}, "replica")
    # One line when it went down (not one per read), one when it came back.
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.endswith(".reads")]
    assert len(said) == 2, said
    assert said[0][0] == "WARNING"
    assert "the read replica is unreachable (ConnectionRefusedError" in said[0][1]
    assert said[1] == ("INFO", "taskiq-exporter: the read replica answers: the API reads from it")
    assert all("pw-never-logged" not in r.getMessage() for r in caplog.records)


async def test_primary_and_replica_down_is_a_503(
    pg_store: str, replica: Replica, replica_url: str
) -> None:
    dbname = make_url(pg_store).database or ""
    primary = make_url(pg_store)
    with (
        TcpProxy(primary.host or "127.0.0.1", primary.port or 5432, database=dbname) as to_primary,
        TcpProxy("127.0.0.1", replica.port, database=dbname) as to_replica,
    ):
        async with running_service(
            to_primary.url(), read_database_url=to_replica.url(), raise_errors=False
        ) as (_app, client):
            assert (await client.get(f"{API}/tasks")).status_code == 200
            to_replica.cut()
            to_primary.cut()
            for path in ("/history", "/history/task/x", "/history/1", "/tasks", "/metrics"):
                answer = await client.get(API + path)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json() == {"error": BOTH_DOWN}
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert (ready.json()["database"], ready.json()["replica"]["reachable"]) == (
                False,
                False,
            )
            to_primary.restore()
            assert (await client.get(f"{API}/tasks")).headers[READ_FROM_KEY] == "primary"
            to_replica.restore()
            assert (await client.get("/readyz")).json()["reads_from"] == "replica"
            assert (await client.get(f"{API}/tasks")).headers[READ_FROM_KEY] == "replica"


async def recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


@pytest.fixture
async def writer(pg_store: str) -> AsyncIterator[PostgresRowStore]:
    """The middleware's PostgreSQL writer on the primary (it NOTIFYs each batch)."""
    store = PostgresRowStore(make_engine(pg_store))
    try:
        yield store
    finally:
        await store.close()


async def write_finished(store: PostgresRowStore, task_id: str) -> None:
    written = log_row(task_id, 1, "app:live", PENDING, created_at=time.time() - 1)
    written[STATUS] = "success"
    await store.write([written], datetime.now(UTC))


@pytest.fixture
async def served(
    pg_store: str, replica_url: str, unused_port: Callable[[], int]
) -> AsyncIterator[tuple[Starlette, str]]:
    """The service reading from the replica behind a real uvicorn (for the WebSocket):
    the app and its host:port."""
    async with (
        running_service(pg_store, read_database_url=replica_url) as (app, _client),
        serving(app, unused_port()) as host,
    ):
        yield app, host


async def test_live_events_come_from_the_primary(
    replica: Replica, writer: PostgresRowStore, served: tuple[Starlette, str]
) -> None:
    app, host = served
    await asyncio.wait_for(app.state.listener.connected.wait(), 10)
    async with connect(f"ws://{host}{API}/events") as ws:
        await eventually(lambda: app.state.exporter.hub.subscribers == 1, "subscribed")
        with replica.replay_paused():
            await write_finished(writer, "live-1")
            message = await recv(ws)
            assert (message["status"], message["data"]["task_id"]) == ("success", "live-1")
            async with httpx.AsyncClient(base_url=f"http://{host}") as client:
                # The event came from the primary: the replica has not replayed the row.
                assert await history_ids(client) == (set(), "replica")


async def test_event_replay_reads_the_replica_once_it_has_caught_up(
    replica: Replica, writer: PostgresRowStore, served: tuple[Starlette, str]
) -> None:
    app, host = served
    query = urlencode({"since": (datetime.now(UTC) - timedelta(seconds=5)).isoformat()})
    await write_finished(writer, "replayed-1")
    counts = app.state.exporter.reads.counts
    async with connect(f"ws://{host}{API}/events?{query}") as ws:
        assert (await recv(ws))["data"]["task_id"] == "replayed-1"
    assert counts == {"primary": 0, "replica": 1}
    with replica.replay_paused():
        # Committed before the stream subscribes: the replay must include it, so it
        # reads the primary when the replica cannot catch up in time.
        await write_finished(writer, "replayed-2")
        async with connect(f"ws://{host}{API}/events?{query}") as ws:
            got = [(await recv(ws))["data"]["task_id"] for _ in range(2)]
        assert got == ["replayed-1", "replayed-2"]
        assert counts == {"primary": 1, "replica": 1}
