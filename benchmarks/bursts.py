"""Drains of the e2e workload by `taskiq worker`, the configurations side by side.

For one setting (worker processes, task names, argument size) one `taskiq worker`
per configuration starts and waits on its own Redis list. Each round then gives
every configuration in turn one burst: sender processes fill a staging list (one
sender tops out near 2,000 ``kiq()`` per second, which would hide any cost on the
worker side), ``RENAME`` makes it the worker's queue at once (waking the blocked
``BRPOP``s) and the workers drain it. Every worker process notes when it
finished each task and its CPU time then (tests/helpers/e2e_app.py), so each
burst's rate and CPU per task come from the workers' own clocks, with no
start-up or shutdown in them. Short bursts in alternation share out the noise
of a busy machine evenly.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import os
import sys
import time
import uuid
from asyncio.subprocess import Process
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg
from redis.asyncio import Redis

from tests.helpers import e2e_workload as w

ROOT = Path(__file__).resolve().parents[1]
APP = "tests.helpers.e2e_app"
# E2E_MIDDLEWARE of each configuration (see e2e_app).
MIDDLEWARE = {"bare": "none", "taskiq-prometheus": "taskiq-prometheus", "exporter": "exporter"}
TERMINAL = "SELECT count(*) FROM task_execution_logs WHERE status IN ('success', 'failed')"
# The same number from the per-minute rollups, which the writer keeps in the statement
# that finishes the rows: a few hundred rows to sum instead of a scan of the log. The
# workers prefetch the whole queue, so this is polled while they work, on the
# PostgreSQL that shares their cores: counting the log every 20 ms took 10-15 ms a time
# on 50,000 rows, close to half a core taken from the exporter's bursts alone.
TERMINAL_ROLLED_UP = "SELECT COALESCE(sum(count), 0) FROM task_execution_rollups"


@dataclass(frozen=True)
class Setting:
    label: str
    workers: int = 2
    names: int = 10
    payload_bytes: int = 0
    burst: int = 5_000  # tasks per burst
    database_core: bool = False  # PostgreSQL on a core of its own (benchmarks/cores.py)


@dataclass
class Burst:
    warmup: bool
    start: int  # task numbers start..stop
    stop: int
    attempts: int
    opened: float  # time() of the RENAME
    closed: float = 0.0  # time() once drained (and logged)
    logged: float | None = None  # time() the log held every attempt (exporter)
    rate: float = 0.0  # attempts/s, first to last finish
    cpu_us: float = 0.0  # worker CPU per attempt
    rows_per_second: float | None = None  # attempts / (first finish .. logged)
    log_lag: float | None = None  # s from the last finish to the last row logged


@dataclass
class Store:
    """The exporter's log after its workers shut down."""

    rows: int
    lost: int  # attempts without a terminal row + rows the middleware dropped
    pg_cpu_us: float | None  # CPU of the workers' PostgreSQL sessions per row (no autovacuum)
    bytes_per_row: float  # pg_total_relation_size / rows, as written
    compact_bytes_per_row: float  # the same after VACUUM FULL


def _spawn(args: list[str], env: dict[str, str], out: IO[bytes]) -> Any:
    return asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, env=env, cwd=ROOT, stdout=out, stderr=out
    )


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Group:
    """One `taskiq worker` of one configuration on its own queue."""

    def __init__(self, config: str, setting: Setting, database_url: str, run: Path) -> None:
        self.config = config
        self.setting = setting
        self.dir = run / config
        (self.dir / "stats").mkdir(parents=True)
        (self.dir / "metrics").mkdir()
        self.log = (self.dir / "processes.log").open("ab")
        self.queue = f"texp-bench-{uuid.uuid4().hex[:10]}"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TASKIQ_EXPORTER_") and k != "PROMETHEUS_MULTIPROC_DIR"
        }
        env.update(
            PYTHONPATH=str(ROOT),
            TEST_QUEUE=self.queue,
            E2E_MIDDLEWARE=MIDDLEWARE[config],
            E2E_TASK_NAMES=str(setting.names),
            E2E_STATS_DIR=str(self.dir / "stats"),
        )
        if config != "bare":
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.dir / "metrics")
        if config == "taskiq-prometheus":
            env["E2E_PROMETHEUS_PORT"] = "0"  # an ephemeral port: never clash with a neighbour
        if config == "exporter":
            env["TASKIQ_EXPORTER_DATABASE_URL"] = database_url
        self.env = env
        self.proc: Process | None = None
        self.bursts: list[Burst] = []

    async def start(self) -> None:
        self.proc = await _spawn(
            ["taskiq", "worker", f"{APP}:broker", "--workers", str(self.setting.workers),
             "--log-level", "WARNING", "--shutdown-timeout", "60"],
            self.env, self.log,
        )  # fmt: skip

    async def fill(self, redis: Redis, start: int, stop: int, senders: int) -> str:
        """Send tasks start..stop into a staging list; its name."""
        staging = f"{self.queue}-staging"
        env = {**self.env, "TEST_QUEUE": staging}
        bounds = [start + (stop - start) * k // senders for k in range(senders + 1)]
        options = ["--no-sleep", "--payload-bytes", str(self.setting.payload_bytes)]
        procs = [
            await _spawn([APP, "send", str(a), str(b), *options], env, self.log)
            for a, b in itertools.pairwise(bounds)
        ]
        codes = await asyncio.gather(*(p.wait() for p in procs))
        if any(codes) or await redis.llen(staging) != stop - start:
            raise RuntimeError(f"filling the queue failed ({codes}); see {self.dir}")
        return staging

    async def burst(
        self, redis: Redis, pg: asyncpg.Connection | None, start: int, stop: int, *,
        senders: int, warmup: bool = False,
    ) -> Burst:  # fmt: skip
        """Fill, then drain tasks start..stop; for the exporter, until they are logged."""
        staging = await self.fill(redis, start, stop, senders)
        attempts = w.expected(start, stop, self.setting.names).attempts
        burst = Burst(warmup, start, stop, attempts, opened=0.0)
        expected = sum(b.attempts for b in self.bursts) + burst.attempts
        burst.opened = time.time()
        await redis.rename(staging, self.queue)
        # Every attempt, retries included, finished (the workers count them): an
        # empty queue is not enough, the workers prefetch it.
        await self._until_finished(expected)
        if pg is not None:
            burst.logged = await self._until_logged(pg, expected)
        burst.closed = time.time()
        self.bursts.append(burst)
        return burst

    @staticmethod
    async def _until_logged(pg: asyncpg.Connection, rows: int) -> float:
        deadline = time.monotonic() + 120
        while await pg.fetchval(TERMINAL_ROLLED_UP) < rows:
            if time.monotonic() > deadline:
                raise RuntimeError("the log did not catch up within 120 s")
            await asyncio.sleep(0.02)
        return time.time()

    async def _until_finished(self, attempts: int) -> None:
        """Until the workers have finished ``attempts`` tasks since they started."""
        deadline = time.monotonic() + 600
        while self._finished() < attempts:
            if self.proc is None or self.proc.returncode is not None:
                raise RuntimeError(f"the {self.config} workers exited; see {self.dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.config} workers did not finish the burst")
            await asyncio.sleep(0.01)

    def _finished(self) -> int:
        return sum(int(f.read_text() or 0) for f in (self.dir / "stats").glob("*.progress"))

    async def stop(self) -> None:
        """Stop the workers (they write their clocks as they exit)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 120)
        self.log.close()

    def measure(self) -> None:
        """Read the stopped workers' clocks into each burst."""
        stats = [json.loads(f.read_text()) for f in (self.dir / "stats").glob("*.json")]
        for burst in self.bursts:
            _measure(burst, stats)


def _measure(burst: Burst, stats: list[dict[str, Any]]) -> None:
    """Rate and CPU per attempt of one burst, from every worker process's clocks."""
    finished: list[float] = []
    cpu = 0.0
    cpu_tasks = 0
    for process in stats:
        times: list[float] = process["finished"]
        lo = bisect.bisect_left(times, burst.opened)
        hi = bisect.bisect_right(times, burst.closed)
        finished += times[lo:hi]
        # CPU time sampled every few tasks: the samples inside the burst.
        samples = [(i, c) for i, c in process["cpu"] if lo <= i < hi]
        if len(samples) >= 2:
            cpu += samples[-1][1] - samples[0][1]
            cpu_tasks += samples[-1][0] - samples[0][0]
    if len(finished) != burst.attempts:
        raise RuntimeError(f"{len(finished)} attempts finished in a burst of {burst.attempts}")
    first, last = min(finished), max(finished)
    burst.rate = (len(finished) - 1) / (last - first)
    burst.cpu_us = cpu / max(1, cpu_tasks) * 1e6
    if burst.logged is not None:
        burst.rows_per_second = burst.attempts / (burst.logged - first)
        burst.log_lag = max(0.0, burst.logged - last)


async def backend_cpu(pg: asyncpg.Connection) -> float | None:
    """CPU of the sessions the workers write through (they live as long as the workers).
    Autovacuum and the server's other background work are not in it."""
    pids = await pg.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    seconds = [s for s in (cpu_seconds(int(r["pid"])) for r in pids) if s is not None]
    return sum(seconds) if seconds else None


async def check_store(pg: asyncpg.Connection, group: Group, pg_cpu: float | None) -> Store:
    """After shutdown: every attempt has its terminal row, nothing was dropped."""
    from exporter.metrics.multiprocess import multiprocess_registry

    attempts = sum(b.attempts for b in group.bursts)
    rows = int(await pg.fetchval(TERMINAL))
    rolled_up = int(await pg.fetchval(TERMINAL_ROLLED_UP))
    if rolled_up != rows:
        raise RuntimeError(f"the rollups count {rolled_up} finished rows, the log holds {rows}")
    dropped = multiprocess_registry(str(group.dir / "metrics"), reap_dead=False).get_sample_value(
        "taskiq_exporter_log_rows_dropped_total"
    )
    size = "SELECT pg_total_relation_size('task_execution_logs')"
    written = int(await pg.fetchval(size)) / rows
    await pg.execute("VACUUM FULL task_execution_logs")
    compact = int(await pg.fetchval(size)) / rows
    return Store(
        rows=rows,
        lost=attempts - rows + int(dropped or 0),
        pg_cpu_us=None if pg_cpu is None else pg_cpu / rows * 1e6,
        bytes_per_row=written,
        compact_bytes_per_row=compact,
    )
