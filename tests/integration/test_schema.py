"""The migrations build exactly the models' schema, on both stores, and undo it."""

from __future__ import annotations

import os
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from exporter.store import migrate
from exporter.store.engine import make_engine
from exporter.store.models import Base

INDEXES = {
    "ix_task_execution_logs_name_status_created",
    "ix_task_execution_logs_created_at",
    "ix_task_execution_logs_task_name",
    "ix_task_execution_logs_status",
}


# On PostgreSQL the log is partitioned and its unique key holds the partition key;
# the models keep SQLite's single table and key (they build queries, not DDL).
SQLITE_KEY = ["task_id", "attempt"]
PARTITIONED_KEY = ["task_id", "attempt", "created_at"]


# The search indexes are not in the models: 0005's exists only where pg_trgm could be
# had, the params one only when asked for (`db search-index`).
SEARCH_INDEXES = {"ix_task_execution_logs_error_trgm", "ix_task_execution_logs_params"}


def _not_a_partition(
    _obj: object, name: str | None, type_: str, _reflected: bool, _compare_to: object
) -> bool:
    if type_ == "index" and name in SEARCH_INDEXES:
        return False
    return not (type_ == "table" and name and name.startswith("task_execution_logs_"))


def _is_the_key(entry: object, columns: list[str]) -> bool:
    constraint = entry[1] if isinstance(entry, tuple) else None
    return [c.name for c in getattr(constraint, "columns", ())] == columns


def _diff(conn: Connection) -> list[object]:
    opts = {"compare_type": True, "include_object": _not_a_partition}
    ctx = MigrationContext.configure(conn, opts=opts)
    diff = list(compare_metadata(ctx, Base.metadata))
    if conn.dialect.name == "postgresql":
        swapped = [e for e in diff if _is_the_key(e, PARTITIONED_KEY) or _is_the_key(e, SQLITE_KEY)]
        assert [e[0] for e in swapped] == ["remove_constraint", "add_constraint"]  # type: ignore[index]
        diff = [e for e in diff if e not in swapped]
    return diff


def _inspect(conn: Connection) -> tuple[set[str], set[str], list[object]]:
    insp = inspect(conn)
    tables = set(insp.get_table_names())
    indexes = (
        {i["name"] for i in insp.get_indexes("task_execution_logs")}
        if ("task_execution_logs" in tables)
        else set()
    )
    uniques = (
        insp.get_unique_constraints("task_execution_logs")
        if "task_execution_logs" in tables
        else []
    )
    return tables, indexes, uniques  # type: ignore[return-value]


async def test_migrated_schema_matches_the_models_and_downgrades(any_url: str) -> None:
    await migrate.upgrade(any_url)
    engine = make_engine(any_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            tables, indexes, uniques = await conn.run_sync(_inspect)
        assert {"task_execution_logs", "task_execution_rollups"} <= tables
        assert indexes >= INDEXES
        key = PARTITIONED_KEY if any_url.startswith("postgresql") else SQLITE_KEY
        assert any(u["column_names"] == key for u in uniques)  # type: ignore[index]
        assert await migrate.current_revision(engine) == migrate.head_revision()
        await migrate.downgrade(any_url, "base")
        async with engine.connect() as conn:
            tables, _, _ = await conn.run_sync(_inspect)
        assert tables <= {"alembic_version"}
        await migrate.upgrade(any_url)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


def test_cli_db_upgrade_migrates_an_empty_database(sqlite_url: str) -> None:
    env = {**os.environ, "TASKIQ_EXPORTER_DATABASE_URL": sqlite_url}
    run = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "db", "upgrade"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    current = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "db", "current", "--database-url", sqlite_url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert current.stdout.strip() == migrate.head_revision()
