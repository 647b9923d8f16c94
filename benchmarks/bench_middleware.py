"""Middleware overhead on taskiq's InMemoryBroker (await_inplace=True), no-op tasks.

    python -m benchmarks.bench_middleware [--database-url URL] [--tasks 20000] [--rounds 11]
        [--outage-tasks 120000] [--args {none,secrets}]

Runs, side by side and interleaved over several rounds (in a rotating order),
N no-op tasks with:
bare taskiq = 1.0; taskiq's PrometheusMiddleware; a naive middleware (insert at
start, update at end, one round trip each); MonitoringMiddleware (metrics and
full logs). Then checks every row is in the database after shutdown, and
measures the buffer's peak memory while the database is unreachable.
The multiprocess metrics directory is set as `taskiq worker` needs it.

``--args none`` sends the task without arguments; ``--args secrets`` gives it a
user, a password and keyword arguments holding a URL's password and a bearer
token, so that every task goes through the redaction of its params (the password
by the task's signature, the rest by key and by text).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# As in a real worker: the directory exists before prometheus_client is imported.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="texp-bench-")

import asyncpg
from taskiq import InMemoryBroker, TaskiqMiddleware
from taskiq.middlewares.prometheus_middleware import PrometheusMiddleware

from benchmarks.options import add_task_args
from benchmarks.scratch import rotation, scratch_database
from exporter import MonitoringMiddleware

YIELD_EVERY = 50
OUTAGE_TASKS = 120_000
# --args secrets: what a login task might be sent with.
SECRET_USER = "alice"
SECRET_PASSWORD = "correct horse battery staple"
SECRET_NOTE = "login failed for https://app:s3cret@db.example/app, retrying"
SECRET_HEADERS = [["Authorization", "Bearer abc.def.ghi"]]


class NaiveMiddleware(TaskiqMiddleware):
    """What a first attempt looks like: one INSERT and one UPDATE per task."""

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn
        self.pool: Any = None

    async def startup(self) -> None:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)

    async def shutdown(self) -> None:
        await self.pool.close()

    async def pre_execute(self, message: Any) -> Any:
        await self.pool.execute(
            "INSERT INTO task_execution_logs (task_name, status, task_id, attempt, started_at,"
            " created_at, updated_at) VALUES ($1, 'running', $2, 1, now(), now(), now())",
            message.task_name,
            message.task_id,
        )
        return message

    async def post_execute(self, message: Any, result: Any) -> None:
        await self.pool.execute(
            "UPDATE task_execution_logs SET status = $2, completed_at = now(), updated_at = now()"
            " WHERE task_id = $1 AND attempt = 1",
            message.task_id,
            "failed" if result.is_err else "success",
        )


def noop_task(broker: InMemoryBroker, args: str) -> Callable[[], Awaitable[Any]]:
    """Registers the no-op task ``bench:noop`` on ``broker``; returns what sends it
    once, with the arguments of ``--args``."""
    if args == "secrets":

        @broker.task(task_name="bench:noop")
        async def login(user: str, password: str, *, note: str, headers: list[list[str]]) -> None:
            return None

        return functools.partial(
            login.kiq, SECRET_USER, SECRET_PASSWORD, note=SECRET_NOTE, headers=SECRET_HEADERS
        )

    @broker.task(task_name="bench:noop")
    async def noop() -> None:
        return None

    return noop.kiq


async def run(
    tasks: int, middlewares: list[TaskiqMiddleware], args: str = "none"
) -> tuple[float, float]:
    broker = InMemoryBroker(await_inplace=True)
    broker.add_middlewares(*middlewares)
    send = noop_task(broker, args)

    await broker.startup()
    started = time.perf_counter()
    for i in range(tasks):
        await send()
        if i % YIELD_EVERY == 0:
            # A real worker's loop turns between messages; with await_inplace
            # nothing would yield and background work would all wait for shutdown.
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    await broker.shutdown()
    drained = time.perf_counter() - started
    return tasks / elapsed, tasks / drained


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM task_execution_logs"))
    finally:
        await conn.close()


async def truncate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE task_execution_logs, task_execution_rollups")
    finally:
        await conn.close()


async def outage_memory(tasks: int, args: str = "none") -> tuple[float, int, int, int]:
    """Peak traced memory (MiB) of the buffer with the database unreachable, the
    rows dropped beyond the bound while running, and those lost at shutdown."""
    mw = MonitoringMiddleware(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none",
        shutdown_flush_timeout_seconds=0.5,
    )
    broker = InMemoryBroker(await_inplace=True).with_middlewares(mw)
    send = noop_task(broker, args)

    await broker.startup()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(tasks):
        await send()
        if i % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    dropped_running = mw.runtime.buffer.dropped
    await broker.shutdown()
    lost_at_shutdown = mw.runtime.buffer.dropped - dropped_running
    return peak / 2**20, dropped_running, lost_at_shutdown, mw.settings.max_buffer_rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default="postgresql+asyncpg://postgres@127.0.0.1/test",
        help="a PostgreSQL URL; a scratch database is created on its server and dropped after",
    )
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--naive-tasks", type=int, default=2_000)
    parser.add_argument(
        "--outage-tasks", type=int, default=OUTAGE_TASKS, help="tasks with the database down"
    )
    add_task_args(parser)
    args = parser.parse_args()
    async with scratch_database(args.database_url, "mw") as url:
        dsn = url.replace("+asyncpg", "")
        # taskiq's middleware registers in the global registry: one instance for
        # every round, writing to the same multiprocess directory as ours.
        taskiq_prometheus = PrometheusMiddleware(
            metrics_path=Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        )
        configs: dict[str, Callable[[], list[TaskiqMiddleware]]] = {
            "bare taskiq": lambda: [],
            "taskiq PrometheusMiddleware": lambda: [taskiq_prometheus],
            "naive insert+update": lambda: [NaiveMiddleware(dsn)],
            "MonitoringMiddleware": lambda: [MonitoringMiddleware(database_url=url)],
        }
        # The naive middleware runs at ~1,000 tasks/s: fewer tasks give its rate.
        sizes = {name: args.tasks for name in configs} | {"naive insert+update": args.naive_tasks}
        rates: dict[str, list[float]] = {name: [] for name in configs}
        drained: dict[str, list[float]] = {name: [] for name in configs}
        lost = 0
        await run(2_000, [], args.args)  # warm up imports and the loop
        for round_no in range(args.rounds):
            # Rotate the order: no configuration always runs after the slow one.
            for name in rotation(list(configs), round_no):
                await truncate(dsn)
                rate, rate_drained = await run(sizes[name], configs[name](), args.args)
                rates[name].append(rate)
                drained[name].append(rate_drained)
                if name == "MonitoringMiddleware":
                    lost += sizes[name] - await count_rows(dsn)
        print(
            f"{args.tasks} no-op tasks x {args.rounds} rounds ({args.naive_tasks} for the naive"
            f" one), args: {args.args}, InMemoryBroker, PostgreSQL store,"
            f" PROMETHEUS_MULTIPROC_DIR set"
            f" (python {sys.version.split()[0]})"
        )
        print(
            "ratio: median over the rounds of this configuration's rate over bare's in the"
            " same round (min-max); us/task: the median's overhead over bare"
        )
        print(
            f"{'configuration':30} {'tasks/s':>9} {'ratio':>6} {'min-max':>10} {'us/task':>8}"
            f" {'incl. shutdown drain':>21} {'ratio':>6}"
        )
        bare, bare_drained = rates["bare taskiq"], drained["bare taskiq"]
        for name, values in rates.items():
            ratios = [v / b for v, b in zip(values, bare, strict=True)]
            ratios_d = [v / b for v, b in zip(drained[name], bare_drained, strict=True)]
            ratio = statistics.median(ratios)
            overhead = (1 / ratio - 1) / statistics.median(bare) * 1e6
            print(
                f"{name:30} {statistics.median(values):9.0f} {ratio:6.2f}"
                f" {min(ratios):4.2f}-{max(ratios):4.2f} {overhead:8.1f}"
                f" {statistics.median(drained[name]):21.0f} {statistics.median(ratios_d):6.2f}"
            )
        print(f"rows missing after shutdown (MonitoringMiddleware, all rounds): {lost}")
        peak, dropped, lost, bound = await outage_memory(args.outage_tasks, args.args)
        held = min(args.outage_tasks, bound)
        print(
            f"database unreachable, {args.outage_tasks} tasks: peak memory {peak:.1f} MiB"
            f" ({peak * 2**20 / held:.0f} bytes per buffered row), {dropped} rows dropped"
            f" beyond the bound of {bound} while running, {lost} counted as lost at shutdown"
        )


def entry(_: Awaitable[None] | None = None) -> None:
    asyncio.run(main())


if __name__ == "__main__":
    entry()
