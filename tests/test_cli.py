"""The ``taskiq-exporter`` command as a new user meets it: --version, help with units,
settings that accept the usual URLs, and every error as one line with the fix."""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from exporter import __version__
from exporter.cli import build_parser, main
from exporter.cli.demo import _port_free
from exporter.cli.options import multiproc_dir
from exporter.demo.store import close_previous_run, newest_failure
from exporter.settings import DEFAULT_MULTIPROC_DIR, ExporterSettings
from exporter.store.engine import make_engine
from exporter.store.migrate import head_revision
from exporter.store.models import TaskExecutionLog as LOG
from tests.helpers.rows import insert_logs, stored_row

EXE = Path(sys.executable).with_name("taskiq-exporter")


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TASKIQ_EXPORTER_")}
    return subprocess.run(
        [str(EXE), *argv], env={**environ, **(env or {})},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def one_line_error(run: subprocess.CompletedProcess[str], command: str) -> str:
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"taskiq-exporter {command}: ")
    return lines[0]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"taskiq-exporter {__version__}\n"


def options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    """Every option of the parser and its subcommands, with the command's name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from options(sub)
        elif action.option_strings and action.dest != "help":
            yield parser.prog.removeprefix("taskiq-exporter "), action


def test_every_option_has_help_and_says_its_unit() -> None:
    found = {(command, action.option_strings[0]): action.help for command, action in
             options(build_parser())}  # fmt: skip
    assert all(found.values()), [key for key, text in found.items() if not text]
    units = {
        ("demo", "--rate"): "per second",
        ("demo", "--duration"): "seconds",
        ("demo", "--port"): "TCP port",
        ("serve", "--port"): "TCP port",
        ("db reap", "--older-than"): "seconds",
        ("db prune", "--days"): "days",
    }
    for key, unit in units.items():
        assert unit in str(found[key]), key


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("postgresql://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgres://db/app", "postgresql+asyncpg://db/app"),
        ("sqlite:///store.sqlite3", "sqlite+aiosqlite:///store.sqlite3"),
        ("sqlite+aiosqlite:////abs/store.sqlite3", "sqlite+aiosqlite:////abs/store.sqlite3"),
    ],
)
def test_database_urls_without_a_driver_get_the_async_one(given: str, stored: str) -> None:
    assert ExporterSettings(database_url=given).database_url == stored


def test_multiproc_dir_is_the_same_for_serve_and_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("TASKIQ_EXPORTER_MULTIPROC_DIR", raising=False)
    assert multiproc_dir(ExporterSettings()) == DEFAULT_MULTIPROC_DIR
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/srv/metrics")
    assert multiproc_dir(ExporterSettings()) == "/srv/metrics"
    assert multiproc_dir(ExporterSettings(multiproc_dir="/flag")) == "/flag"
    helps = {command: str(action.help) for command, action in options(build_parser())
             if action.dest == "multiproc_dir"}  # fmt: skip
    assert set(helps) == {"serve", "worker"}
    assert all(DEFAULT_MULTIPROC_DIR in text for text in helps.values())
    assert "PROMETHEUS_MULTIPROC_DIR=DIR" in helps["serve"]  # how a producer shares it


def test_a_port_in_time_wait_is_free_for_the_demo(unused_port: Callable[[], int]) -> None:
    port = unused_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        assert not _port_free("127.0.0.1", port)  # listening
        accepted.close()  # the server side closes first: its end waits in TIME_WAIT
    client.close()
    assert _port_free("127.0.0.1", port)


def test_db_current_on_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite3"
    run = cli("db", "current", "--database-url", f"sqlite:///{missing}")
    assert run.returncode == 1
    line = one_line_error(run, "db")
    assert f"no database at {missing}" in line
    assert "taskiq-exporter db upgrade" in line
    assert not missing.exists()


def test_db_upgrade_says_where_the_database_now_is_and_nothing_else(tmp_path: Path) -> None:
    store = tmp_path / "sub" / "store.sqlite3"
    run = cli("db", "upgrade", "--database-url", f"sqlite:///{store}")
    assert run.returncode == 0, run.stderr
    assert run.stdout == (
        f"the database at sqlite+aiosqlite:///{store} is at revision {head_revision()} (head)\n"
    )
    assert run.stderr == ""  # no alembic chatter
    current = cli("db", "current", "--database-url", f"sqlite:///{store}")
    assert current.stdout.strip() == head_revision()


def test_invalid_settings_name_their_source_and_hide_their_value() -> None:
    run = cli("db", "current", "--database-url", "postgresql+psycopg2://u:hunter2@db/app")
    assert run.returncode == 2
    assert one_line_error(run, "db") == (
        "taskiq-exporter db: invalid --database-url: unsupported driver 'postgresql+psycopg2': "
        "use postgresql+asyncpg://user@host/db or sqlite+aiosqlite:///file.sqlite3"
    )
    assert "hunter2" not in run.stderr
    from_env = cli("db", "current", env={"TASKIQ_EXPORTER_BATCH_SIZE": "0"})
    assert from_env.returncode == 2
    assert "invalid TASKIQ_EXPORTER_BATCH_SIZE: " in one_line_error(from_env, "db")


def test_serve_takes_a_read_replica_and_checks_it_before_starting() -> None:
    run = cli(
        "serve", "--database-url", "postgresql+asyncpg://app@127.0.0.1/app",
        "--read-database-url", "sqlite+aiosqlite:///replica.sqlite3",
    )  # fmt: skip
    assert run.returncode == 2
    assert one_line_error(run, "serve") == (
        "taskiq-exporter serve: invalid --read-database-url: must be a PostgreSQL streaming "
        "replica (postgresql://user@host/db): SQLite has no replicas"
    )


def test_tail_errors(unused_port: Callable[[], int]) -> None:
    closed = f"http://127.0.0.1:{unused_port()}"
    run = cli("tail", "--url", closed)
    assert run.returncode == 1
    assert one_line_error(run, "tail") == (
        f"taskiq-exporter tail: cannot reach the service at {closed}: connection refused; "
        "is `taskiq-exporter serve` running? check --url"
    )
    scheme = cli("tail", "--url", "ftp://host")
    assert scheme.returncode == 2
    assert one_line_error(scheme, "tail") == (
        "taskiq-exporter tail: --url ftp://host: use http://, https://, ws:// or wss://"
    )


def test_debug_adds_the_traceback(tmp_path: Path) -> None:
    run = cli("--log-level", "DEBUG", "db", "current", "--database-url", f"sqlite:///{tmp_path}/x")
    assert run.returncode == 1
    assert "Traceback" in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("taskiq-exporter db: no database at")


async def test_the_demo_closes_what_its_last_run_left_running(sqlite_store: str) -> None:
    now = datetime.now(UTC)
    await insert_logs(sqlite_store, [
        stored_row(task_id="cut-off", status="running", created_at=now),
        stored_row(task_id="real", status="failed", created_at=now, error_message="ValueError: x",
                error_traceback="Traceback ..."),
        stored_row(task_id="stopped", status="failed", created_at=now,
                error_message="CancelledError: demo stopped", error_traceback="Traceback ..."),
    ])  # fmt: skip
    engine = make_engine(sqlite_store)
    try:
        assert await close_previous_run(engine) == 1
        async with engine.connect() as conn:
            rows = dict((await conn.execute(select(LOG.task_id, LOG.status))).all())
            real = (await conn.execute(select(LOG.id).where(LOG.task_id == "real"))).scalar()
        assert rows == {"cut-off": "failed", "real": "failed", "stopped": "failed"}
        assert await newest_failure(engine) == real
    finally:
        await engine.dispose()


def test_the_demo_runs_and_stops_cleanly(tmp_path: Path, unused_port: Callable[[], int]) -> None:
    port = unused_port()
    run = subprocess.run(
        [str(EXE), "demo", "--port", str(port), "--duration", "3", "--rate", "50"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # no traceback of a task cut off at the stop
    base = f"http://127.0.0.1:{port}/api/v1/monitoring"
    assert f"{base}/history?status=failed&page_size=1" in run.stdout
    assert f"{base}/history/<id>" in run.stdout
    store = sqlite3.connect(tmp_path / ".taskiq-exporter" / "demo.sqlite3")
    try:
        statuses = dict(
            store.execute("SELECT status, count(*) FROM task_execution_logs GROUP BY 1")
        )
    finally:
        store.close()
    assert statuses.get("success", 0) > 0
    assert "running" not in statuses
