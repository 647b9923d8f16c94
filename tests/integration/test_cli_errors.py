"""``taskiq-exporter db`` against PostgreSQL as a new user meets it: a closed port, a
missing database, a URL without a driver, each answered in one line, no password."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from sqlalchemy.engine import make_url

from exporter import MonitoringMiddleware
from exporter.store.migrate import head_revision
from tests.test_cli import cli, one_line_error

pytestmark = pytest.mark.integration


def test_a_closed_port_is_one_line_without_the_password(unused_port: Callable[[], int]) -> None:
    port = unused_port()
    run = cli("db", "current", "--database-url", f"postgresql://app:hunter2@127.0.0.1:{port}/app")
    assert run.returncode == 1
    assert one_line_error(run, "db") == (
        f"taskiq-exporter db: cannot reach the database at "
        f"postgresql+asyncpg://app:***@127.0.0.1:{port}/app: connection refused; "
        "is it running? check --database-url"
    )
    assert "hunter2" not in run.stderr


def test_a_database_that_does_not_exist(pg_url: str) -> None:
    missing = make_url(pg_url).set(database="texp_no_such_database")
    run = cli("db", "upgrade", "--database-url", missing.render_as_string(hide_password=False))
    assert run.returncode == 1
    line = one_line_error(run, "db")
    assert 'database "texp_no_such_database" does not exist' in line
    assert "check --database-url" in line


def test_postgresql_without_a_driver_is_accepted_everywhere(pg_url: str) -> None:
    plain = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    assert cli("db", "current", "--database-url", plain).stdout == "empty (no revision)\n"
    run = cli("db", "upgrade", env={"TASKIQ_EXPORTER_DATABASE_URL": plain})
    assert run.returncode == 0, run.stderr
    shown = make_url(pg_url).render_as_string(hide_password=True)
    made, migrated = run.stdout.splitlines()
    assert re.fullmatch(r"made 4 partitions of the log, for [-\d: ]+ to [-\d: ]+", made), made
    assert migrated == f"the database at {shown} is at revision {head_revision()} (head)"
    assert run.stderr == ""
    assert MonitoringMiddleware(database_url=plain).settings.database_url == pg_url


def test_a_store_without_tables_says_to_upgrade(pg_url: str) -> None:
    run = cli("db", "reap", "--database-url", pg_url)
    assert run.returncode == 1
    assert one_line_error(run, "db").endswith("run taskiq-exporter db upgrade")
