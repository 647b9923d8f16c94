"""Engine construction: the one place that knows about drivers and their options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_file(url: str) -> Path | None:
    """The absolute path of a SQLite URL's database file; None for any other URL, an
    in-memory database or a URL that already is a SQLite ``file:`` URI."""
    if not is_sqlite(url):
        return None
    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or parsed.query.get("uri"):
        return None
    return Path(database).absolute()


def _existing_only(url: str, path: Path) -> str:
    # SQLite's URI ``mode=rw`` opens read-write but fails where ``sqlite3.connect``
    # would create an empty file: a reader must not leave one behind as a side
    # effect, and the service still writes (the reaper and the retention job).
    parsed = make_url(url)
    query = {**parsed.query, "mode": "rw", "uri": "true"}
    return parsed.set(database=path.as_uri(), query=query).render_as_string(hide_password=False)


def make_engine(url: str, *, create: bool = True, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` with settings that suit a log writer and a reader.

    ``create=False`` is for readers (the service, ``db current``): a SQLite file
    that does not exist is not created; connecting fails until it does (see
    :func:`sqlite_file` for the path to report)."""
    if is_sqlite(url):
        path = None if create else sqlite_file(url)
        target = _existing_only(url, path) if path is not None else url
        engine = create_async_engine(target, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets the service read while a worker writes.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", 10)
    connect_args.setdefault("command_timeout", 60)
    connect_args.setdefault("server_settings", {"application_name": "taskiq-exporter"})
    return create_async_engine(url, connect_args=connect_args, **kwargs)
