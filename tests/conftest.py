"""Shared fixtures: fresh databases (PostgreSQL and SQLite) and the service under test.

``pg_url`` creates a new PostgreSQL database per test and drops it afterwards; it
skips when PostgreSQL is not reachable, and fails instead when ``CI`` is set.
``TASKIQ_EXPORTER_TEST_PG`` overrides the server (any database name in it is ignored).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from exporter.store import partitions
from exporter.store.engine import make_engine
from exporter.store.migrate import upgrade
from exporter.store.pg_admin import drop_database, ensure_database

PG_SERVER = os.environ.get(
    "TASKIQ_EXPORTER_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required when CI is set: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """URL of a new, empty PostgreSQL database (``texp_<random>``), dropped after the test."""
    name = f"texp_{uuid.uuid4().hex[:12]}"
    url = make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    try:
        await ensure_database(url)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        _unavailable(repr(exc))
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file in the test's temporary directory (created on first use)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'exporter.sqlite3'}"


@pytest.fixture
def unused_port() -> Callable[[], int]:
    import socket

    def pick() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            return port

    return pick


@pytest.fixture
async def pg_store(pg_url: str) -> str:
    """A fresh PostgreSQL database as `taskiq-exporter db upgrade` leaves it: migrated
    to head, with the log's partitions from today until three days ahead."""
    await upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        await partitions.ensure(engine, interval_hours=24, ahead_hours=72, keep_days=30)
    finally:
        await engine.dispose()
    return pg_url


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> str:
    await upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A migrated store of each kind: for the main paths that must work on both."""
    name = "pg_store" if request.param == "postgresql" else "sqlite_store"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(params=["postgresql", "sqlite"])
def any_url(request: pytest.FixtureRequest) -> str:
    """An empty (unmigrated) database of each kind."""
    name = "pg_url" if request.param == "postgresql" else "sqlite_url"
    url: str = request.getfixturevalue(name)
    return url
