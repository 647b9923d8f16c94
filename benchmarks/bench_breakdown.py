"""Where MonitoringMiddleware's wall time goes, piece by piece, side by side.

    python -m benchmarks.bench_breakdown [--tasks 20000] [--rounds 9]

bench_middleware's workload (InMemoryBroker with await_inplace, no-op tasks,
the multiprocess metrics directory set, the PostgreSQL store), with
middlewares that each add one piece of what MonitoringMiddleware does:

- four empty hooks: what taskiq's dispatch of pre_send, post_send,
  pre_execute and post_execute costs;
- the same with the send-time label stamped in pre_send: what taskiq's copies
  of a non-empty labels dict cost;
- a row kept per task: the label, plus a 15-item list per task held until
  1,000 are held (a flush's worth), against the same list dropped at once:
  what holding rows between flushes costs;
- MonitoringMiddleware without its writer (rows held to the round's end),
  and the whole middleware.

Rounds rotate the order; each ratio is the median over rounds of the rate
over bare taskiq's in the same round. It also counts the garbage collector's
runs per round: bare taskiq frees all it allocates within a task.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from time import time_ns
from typing import Any

# As in a real worker: the directory exists before prometheus_client is imported.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="texp-bench-"))

from taskiq import TaskiqMiddleware

from benchmarks.bench_middleware import run, truncate
from benchmarks.options import add_server_url
from benchmarks.scratch import rotation, scratch_database
from exporter import MonitoringMiddleware
from exporter.middleware.labels import SENT_AT_LABEL

HELD_ROWS = 1_000


class EmptyHooks(TaskiqMiddleware):
    async def pre_send(self, message: Any) -> Any:
        return message

    async def post_send(self, message: Any) -> None:
        return None

    async def pre_execute(self, message: Any) -> Any:
        return message

    async def post_execute(self, message: Any, result: Any) -> None:
        return None


class SendLabel(EmptyHooks):
    async def pre_send(self, message: Any) -> Any:
        message.labels[SENT_AT_LABEL] = time_ns() // 1000
        return message


class HeldRow(SendLabel):
    """A row-sized list per task, held until HELD_ROWS are (``keep=False``: none)."""

    def __init__(self, *, keep: bool) -> None:
        super().__init__()
        self.rows: dict[str, list[Any]] = {}
        self.limit = HELD_ROWS if keep else 0

    async def post_execute(self, message: Any, result: Any) -> None:
        fields = message.__dict__
        rows = self.rows
        task_id = fields["task_id"]
        rows[task_id] = [task_id, 1, fields["task_name"], "success", None, 1.0, 2.0, 3.0,
                         4.0, 5.0, None, None, "host", 1, 0.5]  # fmt: skip
        if len(rows) > self.limit:
            rows.clear()


class WithoutWriter(MonitoringMiddleware):
    """The hooks alone: no writer, no metric applies; rows held to the end."""

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        self.runtime.buffer.rows.clear()


class GcRuns:
    """Collections by generation while it is installed."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.runs[info["generation"]] += 1
            self.seconds += time.perf_counter() - self._started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_url(parser)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    async with scratch_database(args.server_url, "breakdown") as url:
        configs: dict[str, Callable[[], list[TaskiqMiddleware]]] = {
            "bare taskiq": lambda: [],
            "four empty hooks": lambda: [EmptyHooks()],
            "+ send-time label": lambda: [SendLabel()],
            "+ a row dropped at once": lambda: [HeldRow(keep=False)],
            f"+ a row held ({HELD_ROWS:,} at most)": lambda: [HeldRow(keep=True)],
            "MonitoringMiddleware, no writer": lambda: [WithoutWriter(database_url=url)],
            "MonitoringMiddleware": lambda: [MonitoringMiddleware(database_url=url)],
        }
        rates: dict[str, list[float]] = {name: [] for name in configs}
        collections: dict[str, list[GcRuns]] = {name: [] for name in configs}
        await run(2_000, [])  # warm up imports and the loop
        for round_no in range(args.rounds):
            for name in rotation(list(configs), round_no):
                await truncate(url.replace("+asyncpg", ""))  # each round's rows only
                middlewares = configs[name]()
                counter = GcRuns()
                gc.callbacks.append(counter)
                try:
                    rate, _ = await run(args.tasks, middlewares)
                finally:
                    gc.callbacks.remove(counter)
                rates[name].append(rate)
                collections[name].append(counter)
    print(
        f"{args.tasks} no-op tasks x {args.rounds} rounds, InMemoryBroker, PostgreSQL store,"
        f" PROMETHEUS_MULTIPROC_DIR set (python {sys.version.split()[0]})"
    )
    print(
        f"{'configuration':34} {'tasks/s':>8} {'ratio':>6} {'min-max':>10} {'us/task':>8}"
        f" {'gc runs/round (gen 0/1/2)':>26} {'gc ms':>6}"
    )
    bare = rates["bare taskiq"]
    bare_us = 1e6 / statistics.median(bare)
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, bare, strict=True)]
        runs = [statistics.mean(c.runs[g] for c in collections[name]) for g in range(3)]
        gc_ms = statistics.mean(c.seconds for c in collections[name]) * 1e3
        print(
            f"{name:34} {statistics.median(values):8,.0f} {statistics.median(ratios):6.3f}"
            f" {min(ratios):4.2f}-{max(ratios):4.2f}"
            f" {1e6 / statistics.median(values) - bare_us:8.1f}"
            f" {'/'.join(f'{r:.1f}' for r in runs):>26} {gc_ms:6.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
