"""Watching the real processes from a test: scrapes, a once-a-second scraper,
database counts, the service as a process the test can kill."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from tests.helpers.processes import EXPORTER, ROOT
from tests.helpers.waiting import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
WRITE_ERRORS = "taskiq_exporter_log_write_errors_total"
ROWS_DROPPED = "taskiq_exporter_log_rows_dropped_total"
BUFFER_ROWS = "taskiq_exporter_log_buffer_rows"
OWN_SERIES = (WRITE_ERRORS, ROWS_DROPPED, BUFFER_ROWS)


def scrape(base: str) -> Samples:
    response = httpx.get(f"{base}/metrics", timeout=10)
    response.raise_for_status()
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Db:
    """Synchronous reads (pg8000) of the store the product writes with asyncpg."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url.replace("postgresql+asyncpg", "postgresql+pg8000"))

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def scalars(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).scalars())

    def count(self, where: str = "true") -> int:
        return int(self.scalar(f"SELECT count(*) FROM task_execution_logs WHERE {where}") or 0)

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def database(url: str) -> Iterator[Db]:
    db = Db(url)
    try:
        yield db
    finally:
        db.close()


def db_count(url: str, where: str = "true") -> int:
    """Rows of task_execution_logs ``where`` holds, on a connection of its own."""
    with database(url) as db:
        return db.count(where)


class Scraper(threading.Thread):
    """Scrapes /metrics once a second and keeps ``names`` (unlabelled series):
    ``samples[i]`` is the i-th second, ``None`` where the scrape failed."""

    def __init__(self, base: str, names: tuple[str, ...] = OWN_SERIES) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.names = names
        self.samples: list[dict[str, float] | None] = []
        self._halt = threading.Event()

    def run(self) -> None:
        tick = time.monotonic()
        while not self._halt.is_set():
            try:
                s = scrape(self.base)
                self.samples.append({n: value(s, n) for n in self.names})
            except httpx.HTTPError:
                self.samples.append(None)
            tick += 1.0
            # A slow scrape skips seconds rather than bunching samples up.
            while tick < time.monotonic():
                self.samples.append(None)
                tick += 1.0
            self._halt.wait(tick - time.monotonic())

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def mark(self) -> int:
        """The index the next sample will have."""
        return len(self.samples)

    def stop(self) -> list[dict[str, float] | None]:
        self._halt.set()
        if self.ident is not None:  # started
            self.join(timeout=30)
        return self.samples


def start_service(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """``taskiq-exporter serve`` as a process the test may kill; returns once healthy."""
    cmd = [*EXPORTER, "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the service exited with {proc.returncode}")
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, "the service answers /healthz", 60)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


@contextmanager
def service(env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """The service process (see :func:`start_service`), stopped at the end."""
    proc = start_service(env, port)
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
