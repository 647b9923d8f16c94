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

``--search-indexes`` compares three databases at head instead: without the search
indexes, with the trigram index on failed rows' messages (the default), and with
the opt-in GIN index on params too; params and messages then vary per task (a
user id and an order id each, as real arguments do), each round ends by merging
the GIN indexes' pending lists (work they defer, counted with the finished rows),
and the ratios printed are each index's cost: error/none and params/error of the
CPU per task.
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
from benchmarks.scratch import rotation
from exporter.cli import search_index
from exporter.rows import LogRow, log_row
from exporter.store import partitions
from exporter.store.engine import make_engine
from exporter.store.migrate import upgrade
from exporter.store.pg_admin import asyncpg_dsn, drop_database, ensure_database
from exporter.store.pg_writer import PostgresRowStore

PARAMS = '{"args": [1, 2], "kwargs": {"user": "u-42"}}'
TRACEBACK = "Traceback (most recent call last):\n" + '  File "app.py", line 1, in t\n' * 5
BATCHES = (25, 100, 400)
DESCRIBED = {
    "0005": "partitioned by day, no retried count in the rows and rollups",
    "0003": "one table, statement-level hourly triggers",
    "0002": "one table, a row-level hourly trigger",
}
ONE_TABLE = ("0003", "0002")
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


def varied_params(i: int) -> str:
    return f'{{"args": [{i % 1000}], "kwargs": {{"user_id": {i % 77777}, "order_id": "ord-{i}"}}}}'


def pending(t: Task, i: int = 0, *, varied: bool = False) -> LogRow:
    params = varied_params(i) if varied else PARAMS
    return log_row(t.task_id, 1, t.name, "pending", params=params, queued_at=t.sent,
                   created_at=t.sent)  # fmt: skip


def finished(t: Task, i: int, *, varied: bool = False) -> LogRow:
    failed = i % 20 == 0
    message = f"TimeoutError: order ord-{i} of user {i % 77777} timed out" if varied else (
        "ValueError: bad")  # fmt: skip
    return log_row(
        t.task_id, 1, t.name, "failed" if failed else "success", queued_at=t.sent,
        started_at=t.sent + 0.001, completed_at=t.sent + 0.002, duration_ms=1.0,
        queue_wait_ms=1.0, error_message=message if failed else None,
        error_traceback=TRACEBACK if failed else None, worker_host="worker-1",
        worker_pid=4242, retried=(i % 40 == 0) if failed else None, created_at=t.sent,
    )  # fmt: skip


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


# A GIN index takes new entries into a pending list, merged into the index later
# (by autovacuum, or by the writer that fills the list): that deferred work is the
# index's cost to the writes too, so it is done and measured here.
GIN_INDEXES = """
SELECT c.oid::regclass::text FROM pg_class c JOIN pg_am a ON a.oid = c.relam
WHERE a.amname = 'gin' AND c.relkind = 'i'
"""


async def gin_pending(conn: asyncpg.Connection) -> float:
    """The server's CPU seconds for merging every GIN index's pending list."""
    pid = conn.get_server_pid()
    before = cpu_seconds(pid)
    for (index,) in await conn.fetch(GIN_INDEXES):
        await conn.execute("SELECT gin_clean_pending_list($1::regclass)", index)
    after = cpu_seconds(pid)
    if before is None or after is None:
        raise RuntimeError(f"cannot read the CPU time of PostgreSQL process {pid} from /proc")
    return after - before


async def one_round(
    url: str, tasks: list[Task], batch: int, *, varied: bool = False
) -> tuple[float, float]:
    """CPU microseconds per row: the client's PENDING rows, the worker's finished ones."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    store = PostgresRowStore(make_engine(url))
    try:
        await conn.execute(
            "TRUNCATE task_execution_logs, task_execution_rollups, task_execution_rollups_hourly"
        )
        await conn.execute("VACUUM ANALYZE")
        rows = [pending(t, i, varied=varied) for i, t in enumerate(tasks)]
        sent = await write_all(store, rows, batch)
        rows = [finished(t, i, varied=varied) for i, t in enumerate(tasks)]
        done = await write_all(store, rows, batch)
        if varied:
            done += await gin_pending(conn)
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
        "--against", choices=tuple(DESCRIBED), default="0003", help="the older revision"
    )
    parser.add_argument(
        "--search-indexes",
        action="store_true",
        help="compare head without, with the default and with every search index instead",
    )
    args = parser.parse_args()
    if args.search_indexes:
        await search_indexes(args.server_url, args.rows, args.rounds)
        return
    old = args.against
    base = args.server_url.rsplit("/", 1)[0]
    run = uuid.uuid4().hex[:8]
    urls = {rev: f"{base}/texp_bench_store_{rev}_{run}" for rev in ("head", old)}
    for url in urls.values():
        await ensure_database(url)
    try:
        for rev, url in urls.items():
            await upgrade(url, rev)
            if rev in ONE_TABLE:
                continue
            engine = make_engine(url)
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


SEARCH_CONFIGS = ("none", "error", "params")


async def _search_database(url: str, config: str) -> None:
    await upgrade(url)
    engine = make_engine(url)
    try:
        await partitions.ensure(engine, interval_hours=24, ahead_hours=72, keep_days=30)
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if config == "none":
                await search_index.drop(conn, search_index.INDEXES["error"])
            else:
                await search_index.create(conn, search_index.INDEXES["error"])
            if config == "params":
                await search_index.create(conn, search_index.INDEXES["params"])
    finally:
        await engine.dispose()


async def search_indexes(server_url: str, rows: int, rounds: int) -> None:
    """The writer's server CPU per task without and with each search index."""
    base = server_url.rsplit("/", 1)[0]
    run = uuid.uuid4().hex[:8]
    urls = {c: f"{base}/texp_bench_store_{c}_{run}" for c in SEARCH_CONFIGS}
    for url in urls.values():
        await ensure_database(url)
    try:
        for config, url in urls.items():
            await _search_database(url, config)
        print(
            f"PostgreSQL server CPU per task (pending + finished rows, us), {rows} tasks, median"
            f" of {rounds} rounds; none = no search index, error = the trigram index on failed"
            " rows' messages (default), params = error + the GIN index on params (opt-in)"
        )
        print(
            f"{'layout':24} {'batch':>5} {'none':>7} {'error':>7} {'params':>7}"
            f" {'error/none':>10} {'params/error':>12}"
        )
        for layout, names in LAYOUTS.items():
            tasks = workload(rows, names, seed=names)
            for batch in BATCHES:
                results: dict[str, list[float]] = {c: [] for c in urls}
                for round_no in range(rounds):
                    for config in rotation(SEARCH_CONFIGS, round_no):
                        sent, done = await one_round(urls[config], tasks, batch, varied=True)
                        results[config].append(sent + done)
                none, error, params = (statistics.median(results[c]) for c in SEARCH_CONFIGS)
                print(
                    f"{layout:24} {batch:5} {none:7.1f} {error:7.1f} {params:7.1f}"
                    f" {error / none:10.2f} {params / error:12.2f}"
                )
    finally:
        for url in urls.values():
            await drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
