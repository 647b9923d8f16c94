"""The service against a database that is not there yet: a SQLite file that does not
exist, an empty PostgreSQL database. It says so once in the log, answers 503 with
the fix on every route that reads the store (never a 500 or a traceback), creates
nothing, and answers once ``db upgrade`` has run, without a restart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from exporter.app import create_app
from exporter.settings import ExporterSettings
from exporter.store.engine import make_engine
from exporter.store.migrate import upgrade
from tests.helpers.serving import running_service, serving

pytestmark = pytest.mark.integration
API = "/api/v1/monitoring"
STORE_ROUTES = [
    f"{API}/history",
    f"{API}/history/1",
    f"{API}/history/task/some-task",
    f"{API}/tasks",
    f"{API}/metrics",
]
FIX = "taskiq-exporter db upgrade --database-url"


async def assert_unavailable(client: httpx.AsyncClient, *needles: str) -> None:
    for path in STORE_ROUTES:
        response = await client.get(path)
        assert response.status_code == 503, (path, response.text)
        body = response.json()
        assert set(body) == {"error"}, path
        for needle in (FIX, *needles):
            assert needle in body["error"], (path, body)
    scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    assert "taskiq_exporter_store_up 0.0" in scrape.text
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready"


async def until_served(client: httpx.AsyncClient, path: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (response := await client.get(path)).status_code != 200:
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.2)


def assert_said_once(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([m for m in warnings if FIX in m]) == 1, warnings


async def test_missing_sqlite_file_is_reported_and_not_created(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "not-yet.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    async with running_service(url, raise_errors=False) as (_app, client):
        await assert_unavailable(client, f"no database file at {path}")
        assert str(path) in (await client.get("/readyz")).json()["migrations"]
        assert list(tmp_path.iterdir()) == []
        assert_said_once(caplog)

        await upgrade(url)
        await until_served(client, f"{API}/history")
        for path_ in STORE_ROUTES[:1] + STORE_ROUTES[3:]:
            assert (await client.get(path_)).status_code == 200, path_
        assert (await client.get("/readyz")).status_code == 200
        assert "taskiq_exporter_store_up 1.0" in (await client.get("/metrics")).text
    assert "the API answers again" in caplog.text


async def test_empty_postgresql_answers_503_until_migrated(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Trust authentication ignores the password: it is there to be hidden.
    secret_url = make_url(pg_url).set(password="hunter2").render_as_string(hide_password=False)
    async with running_service(secret_url, raise_errors=False) as (_app, client):
        await assert_unavailable(client, "no taskiq-exporter schema", "***")
        assert "hunter2" not in (await client.get(f"{API}/history")).text
        assert FIX in (await client.get("/readyz")).json()["migrations"]
        assert_said_once(caplog)

        await upgrade(pg_url)
        await until_served(client, f"{API}/history")
        assert (await client.get(f"{API}/metrics")).status_code == 200
        assert (await client.get(f"{API}/history/1")).status_code == 404
        assert (await client.get("/readyz")).status_code == 200
    assert "hunter2" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_events_websocket_refused_until_migrated(
    pg_url: str, unused_port: Callable[[], int]
) -> None:
    app = create_app(ExporterSettings(database_url=pg_url, maintenance=False))
    async with serving(app, unused_port()) as host:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://{host}{API}/events"):
                pass
        assert refused.value.response.status_code == 503
        assert FIX in refused.value.response.body.decode()


async def test_maintenance_waits_for_the_schema(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The reaper and the retention job start only once the store is ready: against
    # an empty database they would log a failure on every interval.
    async with running_service(
        pg_url, maintenance=True, reaper_interval_seconds=0.1, retention_interval_seconds=0.1
    ) as (_app, client):
        await asyncio.sleep(0.5)
        assert (await client.get(f"{API}/history")).status_code == 503
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_store_that_breaks_later_gives_500s_in_the_error_shape(
    pg_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Once ready, the store is not checked again: what goes wrong afterwards is a
    # server error, with the error shape and the traceback in the log only.
    async with running_service(pg_store, raise_errors=False) as (_app, client):
        assert (await client.get(f"{API}/history")).status_code == 200
        engine = make_engine(pg_store)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("DROP TABLE task_execution_logs CASCADE"))
        finally:
            await engine.dispose()
        response = await client.get(f"{API}/history")
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert "Traceback" not in response.text
    assert "unhandled error" in caplog.text
