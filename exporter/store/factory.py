"""The row store a database URL asks for: PostgreSQL, or the embedded SQLite."""

from __future__ import annotations

import asyncio
import fcntl
from pathlib import Path

from sqlalchemy.engine import make_url

from exporter.events import EventHub
from exporter.store.engine import is_sqlite, make_engine
from exporter.store.pg_writer import PostgresRowStore
from exporter.store.row_batches import RowStore
from exporter.store.sqlite_writer import SqliteRowStore


async def open_row_store(database_url: str, *, hub: EventHub | None = None) -> RowStore:
    """A store for the writer. PostgreSQL is migrated by ``taskiq-exporter db
    upgrade``; the embedded SQLite store creates its schema itself. ``hub`` gets
    SQLite's events (PostgreSQL sends its own with NOTIFY)."""
    engine = make_engine(database_url)
    if is_sqlite(database_url):
        await _migrate_sqlite(database_url)
        return SqliteRowStore(engine, hub=hub)
    return PostgresRowStore(engine)


async def _migrate_sqlite(url: str) -> None:
    """A file lock keeps several worker processes from migrating one file at once."""
    from exporter.store import migrate  # alembic is only needed here

    database = make_url(url).database
    if not database or database == ":memory:":
        raise ValueError("the embedded store needs a file: sqlite+aiosqlite:///path.sqlite3")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    lock_path = f"{database}.migrate.lock"
    with open(lock_path, "w") as lock:  # noqa: ASYNC230 - a tiny local file
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            await migrate.upgrade(url)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
