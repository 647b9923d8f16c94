"""PostgreSQL's CPU time per logged row: how many tasks one database core sustains.

    python -m benchmarks.bench_store [--rows 20000] [--rounds 3]

Writes through the middleware's own store (exporter.store.pg_writer), as a client
writes PENDING rows and a worker then finishes them, and reads the CPU time of
the store's server process from /proc (so the server must run on this machine). Every
(task name layout, batch size) is measured on two databases side by side, in
alternation: one at head (the log partitioned by day, its partitions made as
`db upgrade` makes them) and one at an older revision, ``--against`` (0003 by
default: one table; 0002: one table with a row-level hourly trigger), and the
ratio of their CPU per task is printed. Each round starts from empty tables and
ends with a check that the log, the minute rollups and the hourly rollups agree.

Layouts: ``clustered`` gives seven consecutive tasks the same of 10 names (a
batch touches a few rollup keys); ``interleaved`` draws each task's name from 200
(a batch touches about as many keys as it has rows).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from benchmarks.bursts import cpu_seconds
from benchmarks.options import add_server_url
from exporter.rows import LogRow
from exporter.store import partitions
from exporter.store.engine import make_engine
from exporter.store.migrate import upgrade
from exporter.store.pg_admin import asyncpg_dsn, drop_database, ensure_database
from exporter.store.pg_writer import PostgresRowStore

PARAMS = '{"args": [1, 2], "kwargs": {"user": "u-42"}}'
TRACEBACK = "Traceback (most recent call last):\n" + '  File "app.py", line 1, in t\n' * 5
BATCHES = (25, 100, 400)
DESCRIBED = {
    "0003": "one table, statement-level hourly triggers",
    "0002": "one table, a row-level hourly trigger",
}
LAYOUTS = {"clustered (10 names)": 10, "interleaved (200 names)": 200}
CHECK = """
SELECT (SELECT count(*) FROM task_execution_logs WHERE status IN ('success', 'failed')),
       (SELECT COALESCE(sum(count), 0) FROM task_execution_rollups),
       (SELECT COALESCE(sum(count), 0) FROM task_execution_rollups_hourly)
"""


@dataclass(frozen=True)
class Task:
    task_id: str
    name: str
    sent: float


def workload(rows: int, names: int, seed: int) -> list[Task]:
    rng = random.Random(seed)
    now = time.time()
    clustered = names <= 10
    return [
        Task(
            uuid.UUID(int=rng.getrandbits(128)).hex,
            f"bench:t{(i // 7) % names if clustered else rng.randrange(names):03d}",
            now + i * 1e-4,
        )
        for i in range(rows)
    ]


def pending(t: Task) -> LogRow:
    return [t.task_id, 1, t.name, "pending", PARAMS, t.sent, None, None, None, None,
            None, None, None, None, t.sent]  # fmt: skip


def finished(t: Task, i: int) -> LogRow:
    failed = i % 20 == 0
    return [t.task_id, 1, t.name, "failed" if failed else "success", None, t.sent,
            t.sent + 0.001, t.sent + 0.002, 1.0, 1.0, "ValueError: bad" if failed else None,
            TRACEBACK if failed else None, "worker-1", 4242, t.sent]  # fmt: skip


async def write_all(store: PostgresRowStore, rows: list[LogRow], batch: int) -> float:
    """The server's CPU seconds for writing ``rows`` in batches of ``batch``."""
    pid = await store.server_pid()
    before = cpu_seconds(pid)
    for lo in range(0, len(rows), batch):
        await store.write(rows[lo : lo + batch], datetime.now(UTC))
    after = cpu_seconds(pid)
    if before is None or after is None:
        raise RuntimeError(f"cannot read the CPU time of PostgreSQL process {pid} from /proc")
    return after - before


async def one_round(url: str, tasks: list[Task], batch: int) -> tuple[float, float]:
    """CPU microseconds per row: the client's PENDING rows, the worker's finished ones."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    store = PostgresRowStore(make_engine(url))
    try:
        await conn.execute(
            "TRUNCATE task_execution_logs, task_execution_rollups, task_execution_rollups_hourly"
        )
        await conn.execute("VACUUM ANALYZE")
        sent = await write_all(store, [pending(t) for t in tasks], batch)
        done = await write_all(store, [finished(t, i) for i, t in enumerate(tasks)], batch)
        logged, minutes, hours = await conn.fetchrow(CHECK)
        if not logged == minutes == hours == len(tasks):
            raise RuntimeError(f"log {logged}, minute rollups {minutes}, hourly {hours}")
    finally:
        await store.close()
        await conn.close()
    return sent / len(tasks) * 1e6, done / len(tasks) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_url(parser)
    parser.add_argument("--rows", type=int, default=20_000, help="tasks per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--against", choices=("0003", "0002"), default="0003", help="the older revision"
    )
    args = parser.parse_args()
    old = args.against
    base = args.server_url.rsplit("/", 1)[0]
    run = uuid.uuid4().hex[:8]
    urls = {rev: f"{base}/texp_bench_store_{rev}_{run}" for rev in ("head", old)}
    for url in urls.values():
        await ensure_database(url)
    try:
        for rev, url in urls.items():
            await upgrade(url, rev)
        engine = make_engine(urls["head"])
        try:
            await partitions.ensure(engine, interval_hours=24, ahead_hours=72, keep_days=30)
        finally:
            await engine.dispose()
        print(
            f"PostgreSQL server CPU per row, {args.rows} tasks, median of {args.rounds} rounds;"
            " pending = the client's statement, finished = the worker's; head = partitioned by"
            f" day, {old} = {DESCRIBED[old]}"
        )
        print(
            f"us/row by database revision; ratio = {old}'s CPU per task (both rows) over head's;"
            " tasks/s per core = 1e6 / head's CPU per task"
        )
        print(
            f"{'layout':24} {'batch':>5} {'pending':>8} {'finished':>9} {old + ' pending':>13}"
            f" {old + ' finished':>14} {'ratio':>6} {'tasks/s per core':>17}"
        )
        for layout, names in LAYOUTS.items():
            tasks = workload(args.rows, names, seed=names)
            for batch in BATCHES:
                results: dict[str, list[tuple[float, float]]] = {rev: [] for rev in urls}
                for round_no in range(args.rounds):
                    order = list(urls) if round_no % 2 == 0 else list(reversed(urls))
                    for rev in order:
                        results[rev].append(await one_round(urls[rev], tasks, batch))
                sent, done, old_sent, old_done = (
                    statistics.median(r[i] for r in results[rev])
                    for rev, i in (("head", 0), ("head", 1), (old, 0), (old, 1))
                )
                print(
                    f"{layout:24} {batch:5} {sent:8.1f} {done:9.1f} {old_sent:13.1f}"
                    f" {old_done:14.1f} {(old_sent + old_done) / (sent + done):6.2f}"
                    f" {1e6 / (sent + done):17,.0f}"
                )
    finally:
        for url in urls.values():
            await drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
