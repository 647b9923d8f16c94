"""Least privilege on a real PostgreSQL: the shipped roles.sql and grants.sql applied
with fresh role names; the owner migrates, a real MonitoringMiddleware writes as the
writer, the service (API, events, reaper, retention) runs as the service role, and
every SQL panel of the dashboards as Grafana's reader; and each role is refused
what it must not do.

Needs PostgreSQL and psql: skipped locally when one is missing, a failure when
``CI`` is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from taskiq import InMemoryBroker
from websockets.asyncio.client import connect

from dashboards.common import EXECUTION_UID
from dashboards.queries import sql_queries, substitute_sql
from exporter import MonitoringMiddleware
from exporter.maintenance import loop, reaper, retention
from exporter.settings import ExporterSettings
from exporter.store import partitions
from exporter.store.engine import make_engine
from exporter.store.migrate import upgrade
from exporter.store.pg_admin import asyncpg_dsn, drop_database
from tests.helpers.middleware import monitored_broker, sample
from tests.helpers.serving import running_service, serving

pytestmark = pytest.mark.integration
SQL_DIR = Path(__file__).resolve().parents[2] / "exporter" / "assets" / "postgres"
ROLES_SQL, GRANTS_SQL = SQL_DIR / "roles.sql", SQL_DIR / "grants.sql"
API = "/api/v1/monitoring"
QUOTED = "o'brien"  # a task name with a quote: Grafana's sqlstring doubles it
INJECTION = "x') OR true --"
KINDS = ("owner", "writer", "service", "reader")


def _psql() -> str:
    psql = shutil.which("psql")
    if psql is None:
        if os.environ.get("CI"):
            pytest.fail("psql is required in CI (apt-get install postgresql-client)")
        pytest.skip("psql is not installed")
    return psql


@dataclass(frozen=True)
class Roles:
    """Role names and passwords of one test, and the database they were made for."""

    database_url: str  # the administrator's URL of the database
    names: dict[str, str]
    passwords: dict[str, str] = field(repr=False)

    @classmethod
    def random(cls, database_url: str) -> Roles:
        suffix = uuid.uuid4().hex[:8]
        return cls(
            database_url,
            {kind: f"texp_{kind}_{suffix}" for kind in KINDS},
            {kind: uuid.uuid4().hex for kind in KINDS},
        )

    def url(self, kind: str) -> str:
        """The database URL as role ``kind`` (owner, writer, service, reader)."""
        parsed = make_url(self.database_url)
        return parsed.set(
            username=self.names[kind], password=self.passwords[kind]
        ).render_as_string(hide_password=False)

    def variables(self, *kinds: str) -> list[str]:
        return [arg for kind in kinds for arg in ("-v", f"{kind}={self.names[kind]}")]


def psql(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """psql on ``url`` (a SQLAlchemy URL), stopping at the first error."""
    command = [_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", asyncpg_dsn(url), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def create_roles(roles: Roles) -> None:
    """roles.sql run by the administrator of the database."""
    passwords = [a for k in KINDS for a in ("-v", f"{k}_password={roles.passwords[k]}")]
    run = psql(roles.database_url, *roles.variables(*KINDS), *passwords, "-f", str(ROLES_SQL))
    assert run.returncode == 0, run.stderr


def grant(roles: Roles, *options: str) -> None:
    """grants.sql run by the owner; ``options`` are more psql variables (``a=b``)."""
    extra = [arg for option in options for arg in ("-v", option)]
    run = psql(
        roles.url("owner"),
        *roles.variables("writer", "service", "reader"),
        *extra,
        "-f",
        str(GRANTS_SQL),
    )
    assert run.returncode == 0, run.stderr


def drop_roles(roles: Roles) -> None:
    """The roles gone, after their database (which the owner owns)."""
    admin = make_url(roles.database_url).set(database="postgres")
    names = ", ".join(f'"{name}"' for name in roles.names.values())
    run = psql(admin.render_as_string(hide_password=False), "-c", f"DROP ROLE IF EXISTS {names}")
    assert run.returncode == 0, run.stderr


@pytest.fixture
async def roles(pg_url: str) -> AsyncIterator[Roles]:
    """The four roles on a fresh database, migrated by the owner and granted."""
    _psql()
    made = Roles.random(pg_url)
    try:
        create_roles(made)
        await upgrade(made.url("owner"))
        owner = make_engine(made.url("owner"))
        try:  # as `taskiq-exporter db upgrade` does, as the owner
            await partitions.ensure(owner, interval_hours=24, ahead_hours=72, keep_days=30)
        finally:
            await owner.dispose()
        grant(made)
        yield made
    finally:
        await drop_database(pg_url)  # before its owner
        drop_roles(made)


def make_broker(url: str) -> tuple[InMemoryBroker, MonitoringMiddleware, asyncio.Event]:
    """The middleware on an in-place broker; ``roles:stuck`` runs until the event is set."""
    broker, mw = monitored_broker(url, retries=2)
    gate = asyncio.Event()

    @broker.task(task_name="roles:ok")
    async def ok(x: int, **kwargs: Any) -> int:
        return x

    @broker.task(task_name=QUOTED)
    async def fails() -> None:
        raise ValueError("no luck")

    @broker.task(task_name="roles:stuck")
    async def stuck() -> None:
        await gate.wait()

    return broker, mw, gate


async def kiq(broker: InMemoryBroker, name: str, *args: Any, **kwargs: Any) -> None:
    task = broker.find_task(name)
    assert task is not None
    await task.kiq(*args, **kwargs)


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def write_workload(url: str) -> None:
    """Three successes (one with a secret argument) and a failure, as the writer."""
    broker, mw, _ = make_broker(url)
    await broker.startup()
    try:
        for i in range(3):
            await kiq(broker, "roles:ok", i, creds={"password": "hunter2"})
        await kiq(broker, QUOTED)
    finally:
        await broker.shutdown()
    assert sample(mw, "taskiq_exporter_log_write_errors_total") == 0
    assert sample(mw, "taskiq_exporter_log_rows_written_total") == 4


@dataclass(frozen=True)
class PanelRows:
    panel: str
    rows: list[asyncpg.Record]
    by_task: bool  # the panel follows the task_name variable


async def panel_rows(
    reader_url: str, task_names: Sequence[str] | None, attempt: str = ""
) -> list[PanelRows]:
    """Every SQL panel of the dashboards, as Grafana sends it, run as ``reader_url``
    with ``task_names`` selected (None: "All") and ``attempt`` in the execution
    dashboard's attempt box (the history dashboard's stays empty)."""
    start, end = "1970-01-01T00:00:00Z", (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    found = []
    for q in sql_queries():
        box = attempt if q.dashboard == EXECUTION_UID else ""
        raw = substitute_sql(
            q.sql, start=start, end=end, task_names=task_names, values={"attempt": box}
        )
        rows = await fetch(reader_url, raw)
        found.append(PanelRows(f"{q.dashboard} / {q.panel}", rows, "${task_name:" in q.sql))
    return found


async def first_failed(url: str, task_name: str) -> str:
    """The log id of a failed attempt of ``task_name``, for the attempt box."""
    rows = await fetch(
        url,
        "SELECT id FROM task_execution_logs_redacted WHERE task_name = $1 AND status = 'failed'"
        " ORDER BY id LIMIT 1",
        task_name,
    )
    return str(rows[0]["id"])


async def test_no_role_is_a_superuser_and_the_owner_owns_the_database(roles: Roles) -> None:
    names = list(roles.names.values())
    found = await fetch(
        roles.database_url,
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
        "rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = ANY($1)",
        names,
    )
    assert len(found) == 4
    for row in found:
        assert row["rolcanlogin"]
        assert not any(row[k] for k in ("rolsuper", "rolcreaterole", "rolcreatedb",
                                        "rolreplication", "rolbypassrls"))  # fmt: skip
    limits = {r["rolname"]: r["rolconnlimit"] for r in found}
    assert limits[roles.names["reader"]] == 10
    owner = await fetch(roles.database_url, "SELECT pg_get_userbyid(datdba) AS o FROM pg_database "
                        "WHERE datname = current_database()")  # fmt: skip
    assert owner[0]["o"] == roles.names["owner"]
    tables = await fetch(roles.database_url, "SELECT DISTINCT tableowner FROM pg_tables "
                         "WHERE schemaname = 'public'")  # fmt: skip
    assert [r["tableowner"] for r in tables] == [roles.names["owner"]]


async def test_each_component_works_with_its_own_role(
    roles: Roles, unused_port: Any, caplog: pytest.LogCaptureFixture
) -> None:
    writer, service = roles.url("writer"), roles.url("service")
    async with (
        running_service(service) as (app, client),
        serving(app, unused_port()) as host,
        connect(f"ws://{host}{API}/events") as ws,
    ):
        # The service LISTENs (as its role) and the writer NOTIFYs.
        await asyncio.wait_for(app.state.listener.connected.wait(), 10)
        while app.state.exporter.hub.subscribers < 1:
            await asyncio.sleep(0.01)
        await write_workload(writer)
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert event["type"] == "task_event"

        assert (await client.get("/readyz")).status_code == 200
        history = (await client.get(f"{API}/history", params={"page_size": 50})).json()
        assert history["total_count"] == 4
        failed = next(i for i in history["items"] if i["task_name"] == QUOTED)
        detail = (await client.get(f"{API}/history/{failed['id']}")).json()
        assert "ValueError: no luck" in detail["error_traceback"]
        summary = (await client.get(f"{API}/metrics")).json()
        assert summary["overall"]["total_executions"] == 4
        assert (await client.get(f"{API}/tasks")).json()["task_names"] == sorted(
            ["roles:ok", QUOTED]
        )
        assert "taskiq_exporter_store_up 1.0" in (await client.get("/metrics")).text

    # The reaper (as the service) fails an attempt the writer left running.
    broker, _, gate = make_broker(writer)
    await broker.startup()
    stuck = asyncio.create_task(kiq(broker, "roles:stuck"))
    try:
        stuck_status = "SELECT status FROM task_execution_logs WHERE task_name = 'roles:stuck'"
        for _ in range(200):
            if [r["status"] for r in await fetch(service, stuck_status)] == ["running"]:
                break
            await asyncio.sleep(0.02)
        assert [r["status"] for r in await fetch(service, stuck_status)] == ["running"]
        engine = make_engine(service)
        try:
            later = datetime.now(UTC) + timedelta(seconds=5)
            assert await reaper.reap_orphans(engine, older_than_seconds=1, now=later) == 1
            hourly = "SELECT sum(count) AS n FROM task_execution_rollups_hourly"
            assert (await fetch(service, hourly))[0]["n"] == 5

            # Grafana's panels as the reader: "All", a quoted name, an injection;
            # the execution dashboard on the failed attempt of the quoted name.
            reader = roles.url("reader")
            failed = await first_failed(reader, QUOTED)
            for found in await panel_rows(reader, None, failed):
                assert found.rows, f"{found.panel}: no row for All"
            for found in await panel_rows(reader, [QUOTED], failed):
                assert found.rows, f"{found.panel}: no row for {QUOTED}"
                if found.by_task or "task_name" in found.rows[0]:
                    assert {r["task_name"] for r in found.rows} == {QUOTED}, found.panel
            for found in await panel_rows(reader, [INJECTION], INJECTION):
                assert found.rows == [], f"{found.panel}: {INJECTION!r} matched {found.rows}"

            # Retention (as the service) deletes everything, rollup minutes too. It may
            # not drop today's partition (only the owner may): it says so and deletes
            # the rows in batches instead.
            future = datetime.now(UTC) + timedelta(days=1, minutes=2)
            with caplog.at_level(logging.WARNING, logger="exporter.store.partitions"):
                pruned = await retention.prune(engine, days=0, batch_rows=2, now=future)
            assert (pruned.rows, pruned.dropped) == (5, [])
            assert "only its owner may" in caplog.text
            assert (await fetch(service, hourly))[0]["n"] is None
            # Nor make partitions: the maintenance says so, and rows go to the default one.
            caplog.clear()
            settings = ExporterSettings(database_url=service, partition_ahead_hours=24 * 10)
            with caplog.at_level(logging.WARNING, logger="exporter.maintenance.loop"):
                assert await loop.make_partitions(engine, settings) == []
            assert "only its owner may" in caplog.text
        finally:
            await engine.dispose()
        # Advisory locks (one maintenance job per replica) need no grant.
        lock = "SELECT pg_try_advisory_lock(2052128769) AS got"
        assert (await fetch(service, lock))[0]["got"] is True
    finally:
        gate.set()
        await stuck
        await broker.shutdown()


async def _refused(url: str, *statements: str, setup: str = "") -> list[str]:
    """The statements that did *not* fail with a privilege error, each in a session
    of its own after ``setup``."""
    allowed = []
    for sql in statements:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            if setup:
                await conn.execute(setup)
            await conn.execute(sql)
        except asyncpg.InsufficientPrivilegeError:
            continue
        finally:
            await conn.close()
        allowed.append(sql)
    return allowed


async def test_the_reader_sees_no_params_or_tracebacks_and_cannot_write(roles: Roles) -> None:
    await write_workload(roles.url("writer"))
    reader = roles.url("reader")
    assert (
        await _refused(
            reader,
            "SELECT params FROM task_execution_logs",
            "SELECT error_traceback FROM task_execution_logs",
            "SELECT id FROM task_execution_logs",
            "SELECT * FROM alembic_version",
        )
        == []
    )
    with pytest.raises(asyncpg.UndefinedColumnError):
        await fetch(reader, "SELECT params FROM task_execution_logs_redacted")
    with pytest.raises(asyncpg.UndefinedColumnError):
        await fetch(reader, "SELECT error_traceback FROM task_execution_logs_redacted")
    seen = await fetch(reader, "SELECT * FROM task_execution_logs_redacted")
    assert len(seen) == 4
    assert "hunter2" not in repr(seen)
    assert "Traceback" not in repr(seen)

    # Read-only by default; and with the default turned off, refused by the grants.
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await fetch(reader, "DELETE FROM task_execution_rollups")
    writes = [
        "INSERT INTO task_execution_rollups VALUES (now(), 'x', 'success', 1, 1)",
        "UPDATE task_execution_rollups SET count = 0",
        "DELETE FROM task_execution_rollups_hourly",
        "UPDATE task_execution_logs_redacted SET status = 'failed'",
        "TRUNCATE task_execution_rollups",
        "CREATE TABLE mine (x int)",
        "CREATE TEMP TABLE mine (x int)",
        "DROP VIEW task_execution_logs_redacted",
    ]
    read_write = "SET default_transaction_read_only = off"
    assert await _refused(reader, *writes, setup=read_write) == []
    assert (await fetch(reader, "SELECT count(*) AS n FROM task_execution_rollups"))[0]["n"] > 0

    # Its statement timeout is a default it may raise (PostgreSQL has no per-role
    # maximum, docs/security.md); temp_file_limit is a superuser's setting.
    assert (await fetch(reader, "SHOW statement_timeout"))[0][0] == "10s"
    await fetch(reader, "SET statement_timeout = 0")
    assert await _refused(reader, "SET temp_file_limit = -1") == []

    # Grafana's sqlstring doubles quotes but not backslashes: the role keeps a
    # backslash an ordinary character whatever the database's default says.
    database = make_url(roles.database_url).database
    await fetch(
        roles.database_url, f'ALTER DATABASE "{database}" SET standard_conforming_strings = off'
    )
    assert (await fetch(reader, "SHOW standard_conforming_strings"))[0][0] == "on"


async def test_the_writer_and_the_service_cannot_delete_what_is_not_theirs(roles: Roles) -> None:
    await write_workload(roles.url("writer"))
    writer, service = roles.url("writer"), roles.url("service")
    assert (
        await _refused(
            writer,
            "DELETE FROM task_execution_logs",
            "DELETE FROM task_execution_rollups",
            "DELETE FROM task_execution_rollups_hourly",
            "TRUNCATE task_execution_logs",
            "DROP TABLE task_execution_logs",
            "DROP VIEW task_execution_logs_redacted",
            "ALTER TABLE task_execution_logs ADD COLUMN x int",
            "DROP TRIGGER task_execution_rollups_hourly_ins ON task_execution_rollups",
            "UPDATE alembic_version SET version_num = 'x'",
            "CREATE TABLE mine (x int)",
            "CREATE TEMP TABLE mine (x int)",
        )
        == []
    )
    assert (
        await _refused(
            service,
            "INSERT INTO task_execution_logs (task_name, status, task_id, created_at, updated_at) "
            "VALUES ('x', 'success', 'x', now(), now())",
            "UPDATE task_execution_logs SET params = '{}'",
            "UPDATE task_execution_logs SET task_name = 'x'",
            "TRUNCATE task_execution_logs",
            "DROP TABLE task_execution_logs",
            "UPDATE alembic_version SET version_num = 'x'",
            "CREATE TABLE mine (x int)",
        )
        == []
    )
    rows = await fetch(roles.database_url, "SELECT count(*) AS n FROM task_execution_logs")
    assert rows[0]["n"] == 4


async def test_the_reader_reads_details_through_their_view_only_unless_withheld(
    roles: Roles,
) -> None:
    await write_workload(roles.url("writer"))
    reader = roles.url("reader")
    details = "SELECT id, params, error_traceback FROM task_execution_details ORDER BY id"
    seen = await fetch(reader, details)
    assert len(seen) == 4
    tracebacks = [r["error_traceback"] for r in seen if r["error_traceback"]]
    assert len(tracebacks) == 1
    assert "ValueError: no luck" in tracebacks[0]
    # The middleware redacted the secret before it was stored: the view shows that.
    assert "hunter2" not in repr(seen)
    assert sum('"_redacted"' in str(r["params"]) for r in seen) == 3
    assert (
        await _refused(
            reader,
            "SELECT params FROM task_execution_logs",
            "SELECT error_traceback FROM task_execution_logs",
            "UPDATE task_execution_details SET error_message = 'x'",
        )
        == []
    )
    # The view has only its seven columns.
    with pytest.raises(asyncpg.UndefinedColumnError):
        await fetch(reader, "SELECT worker_host FROM task_execution_details")

    grant(roles, "reader_details=off")
    assert await _refused(reader, details) == []
    redacted = "SELECT count(*) AS n FROM task_execution_logs_redacted"
    assert (await fetch(reader, redacted))[0]["n"] == 4  # the rest stays readable
    grant(roles)  # and back on by default
    assert len(await fetch(reader, details)) == 4


async def test_grants_sql_runs_again_after_an_upgrade(roles: Roles) -> None:
    await write_workload(roles.url("writer"))
    grant(roles)
    seen = await fetch(
        roles.url("reader"), "SELECT count(*) AS n FROM task_execution_logs_redacted"
    )
    assert seen[0]["n"] == 4
    await write_workload(roles.url("writer"))


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ((), "set -v owner_password="),
        (("owner=postgres",), "choose other names"),
        (("writer=texp_same", "reader=texp_same"), "four different names"),
        (("reader_connection_limit=ten",), "must be a whole number"),
    ],
)
async def test_roles_sql_refuses_before_it_changes_anything(
    pg_url: str, variables: tuple[str, ...], message: str
) -> None:
    _psql()
    passwords = () if not variables else tuple(f"{k}_password=p{k}" for k in KINDS)
    args = [a for v in (*variables, *passwords) for a in ("-v", v)]
    state = (
        "SELECT count(*) AS n, bool_and(rolsuper) FILTER (WHERE rolname = 'postgres') AS su "
        "FROM pg_roles"
    )
    before = await fetch(pg_url, state)
    run = psql(pg_url, *args, "-f", str(ROLES_SQL))
    assert run.returncode == 3
    assert message in run.stderr
    assert await fetch(pg_url, state) == before
    assert before[0]["su"] is True
