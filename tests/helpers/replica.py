"""A real streaming replica of the test PostgreSQL, for the read-replica tests.

:func:`streaming_replica` takes a base backup of the whole test cluster
(``pg_basebackup -R -X stream``) into a temporary directory and starts a second,
hot-standby ``postgres`` on another loopback port with the server binaries of the
primary's major version. The databases the tests create on the primary afterwards
reach the replica by streaming (CREATE DATABASE is WAL-logged): one replica serves
the whole session. PostgreSQL refuses to run as root, so as root the commands run
as the ``postgres`` OS user.

The primary must accept replication connections from 127.0.0.1. When pg_basebackup
is refused by pg_hba.conf, the helper appends ``host replication all 127.0.0.1/32
trust`` to the primary's hba file (once: not when the line is there already) and
reloads it: a test server with trust authentication is assumed, as everywhere in
this suite.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

REPLICATION_RULE = "host replication all 127.0.0.1/32 trust"
START_SECONDS = 120
# The settings a hot standby needs at least as high as its primary's.
HOT_STANDBY_MINIMUMS = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)


class ReplicaUnavailable(Exception):
    """The replica could not be started; the message says why."""


@dataclass(frozen=True)
class Replica:
    """A running hot standby of the test server."""

    port: int
    directory: Path
    primary_url: str

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on the replica."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, query: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run ``query`` on the replica; its rows."""
        return _run_sql(self.port, query, **params)

    def wait_caught_up(self, seconds: float = 60) -> None:
        """Return once the replica has replayed everything the primary had written
        when called (the databases a test has just created and migrated included)."""
        primary = make_url(self.primary_url)
        ((target,),) = _run_sql(primary.port or 5432, "SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + seconds
        while True:
            ((done,),) = self.sql(
                "SELECT pg_last_wal_replay_lsn() >= CAST(:target AS pg_lsn)", target=target
            )
            if done:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the replica did not replay up to {target} in {seconds} s")
            time.sleep(0.05)

    @contextlib.contextmanager
    def replay_paused(self) -> Iterator[None]:
        """Replay stopped (WAL still arrives, nothing of it becomes visible) until the
        block ends: what the primary commits meanwhile is not on the replica."""
        self.sql("SELECT pg_wal_replay_pause()")
        try:
            deadline = time.monotonic() + 30
            while self.sql("SELECT pg_get_wal_replay_pause_state()") != [("paused",)]:
                assert time.monotonic() < deadline, "replay did not pause"
                time.sleep(0.02)
            yield
        finally:
            self.sql("SELECT pg_wal_replay_resume()")


def _run_sql(port: int, query: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(
        f"postgresql+pg8000://postgres@127.0.0.1:{port}/postgres",
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"timeout": 10},
    )
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(query), params)]
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str], what: str, timeout: float = START_SECONDS) -> None:
    try:
        done = subprocess.run(
            _as_postgres(args), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReplicaUnavailable(f"{what}: {exc}") from exc
    if done.returncode != 0:
        raise ReplicaUnavailable(f"{what} failed ({done.returncode}): {done.stderr.strip()}")


def _allow_replication(port: int) -> None:
    """Append the replication rule to the primary's pg_hba.conf unless it is there, and
    reload it; called only after pg_basebackup was refused."""
    ((hba_file,),) = _run_sql(port, "SHOW hba_file")
    path = Path(str(hba_file))
    try:
        text = path.read_text()
        if REPLICATION_RULE.split() not in [line.split() for line in text.splitlines()]:
            with path.open("a") as hba:
                hba.write("" if text.endswith("\n") or not text else "\n")
                hba.write("# added by the taskiq-exporter tests (tests/helpers/replica.py)\n")
                hba.write(REPLICATION_RULE + "\n")
    except OSError as exc:
        raise ReplicaUnavailable(
            f"the primary refuses replication connections and {path} cannot be changed "
            f"({exc}): add `{REPLICATION_RULE}` to it and reload PostgreSQL"
        ) from exc
    _run_sql(port, "SELECT pg_reload_conf()")
    time.sleep(1)  # the postmaster reloads on a signal, after the call returns


def _base_backup(bindir: Path, port: int, data: Path) -> None:
    args = [str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    # -c fast: a fast checkpoint, or the backup waits for the next spread one.
    args += ["-D", str(data), "-R", "-X", "stream", "-c", "fast", "--no-password"]
    try:
        _run(args, "pg_basebackup")
    except ReplicaUnavailable as exc:
        if "pg_hba.conf" not in str(exc):
            raise
        shutil.rmtree(data, ignore_errors=True)
        _allow_replication(port)
        _run(args, "pg_basebackup (after allowing replication in pg_hba.conf)")


def _config(directory: Path, port: int, primary_port: int) -> Path:
    minimums = [
        f"{name} = {_run_sql(primary_port, f'SHOW {name}')[0][0]}" for name in HOT_STANDBY_MINIMUMS
    ]
    hba = directory / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    conf = directory / "replica.conf"
    conf.write_text(
        "\n".join(
            [
                f"port = {port}",
                "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{directory}'",
                f"hba_file = '{hba}'",
                "hot_standby = on",
                "shared_buffers = 32MB",
                "fsync = off",  # a throwaway copy
                "timezone = 'UTC'",
                *minimums,
                "",
            ]
        )
    )
    return conf


def _wait_streaming(port: int) -> None:
    deadline = time.monotonic() + START_SECONDS
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if _run_sql(port, "SELECT status FROM pg_stat_wal_receiver") == [("streaming",)]:
                return
        except Exception as exc:  # not accepting connections yet
            error = exc
        time.sleep(0.1)
    raise ReplicaUnavailable(f"the replica did not start streaming ({error!r})")


@contextlib.contextmanager
def streaming_replica(primary_url: str) -> Iterator[Replica]:
    """A hot standby of the server at ``primary_url`` (a PostgreSQL on this machine),
    stopped and deleted when the block ends. Raises :class:`ReplicaUnavailable`."""
    port = make_url(primary_url).port or 5432
    try:
        version = int(str(_run_sql(port, "SHOW server_version_num")[0][0])) // 10_000
    except Exception as exc:
        raise ReplicaUnavailable(f"cannot reach the primary: {exc!r}") from exc
    bindir = Path(f"/usr/lib/postgresql/{version}/bin")
    if not (bindir / "postgres").exists():
        raise ReplicaUnavailable(f"no PostgreSQL {version} server binaries in {bindir}")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        raise ReplicaUnavailable("running as root without runuser to become postgres")
    directory = Path(tempfile.mkdtemp(prefix="texp-replica-"))
    data = directory / "data"
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        _base_backup(bindir, port, data)
        replica_port = _free_port()
        conf = _config(directory, replica_port, port)
        log = directory / "replica.log"
        _run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "120",
                "-o",
                f"-c config_file={conf}",
                "start",
            ],
            "starting the replica",
        )
        started = True
        try:
            _wait_streaming(replica_port)
        except ReplicaUnavailable as exc:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise ReplicaUnavailable(f"{exc}; its log ends with:\n{tail}") from exc
        yield Replica(port=replica_port, directory=directory, primary_url=primary_url)
    finally:
        if started:
            with contextlib.suppress(ReplicaUnavailable):
                _run([str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast", "-w"], "stop")
        shutil.rmtree(directory, ignore_errors=True)
