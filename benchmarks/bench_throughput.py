"""Throughput of real `taskiq worker` processes on Redis: bare, taskiq's Prometheus, this product.

    python -m benchmarks.bench_throughput [--rounds 8] [--burst 5000] [--only "1 worker"]

The end-to-end workload (tests/helpers/e2e_workload.py: 5% of the tasks end
failed, 4% are retried) with every sleep removed, so that what the monitoring
costs is visible, drained from a pre-filled ``ListQueueBroker`` queue
(benchmarks/bursts.py) by each configuration:

* ``bare``: taskiq with its retry middleware = 1.0;
* ``taskiq-prometheus``: plus taskiq's ``PrometheusMiddleware``;
* ``exporter``: plus ``MonitoringMiddleware`` with the PostgreSQL store and the
  multiprocess directory, on the senders too (they write the PENDING rows). After
  shutdown every attempt must have its terminal row and nothing may be dropped.

For each setting (1, 2, 4 worker processes; 10 or 200 task names; 1 KB or 100 KB
arguments; 2 workers with PostgreSQL on a core of its own, as on its own host, see
benchmarks/cores.py) the configurations take turns, one burst each per round, in a
rotating order; each ratio is against the bare burst of the same round. The
machine is shared: absolute rates drift, ratios measured side by side hold, and
the CPU time per task (from the workers' own clocks) drifts least of all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from benchmarks.bursts import MIDDLEWARE, Burst, Group, Setting, Store, backend_cpu, check_store
from benchmarks.cores import PinningUnavailable, database_core
from exporter.store.migrate import upgrade
from exporter.store.pg_admin import asyncpg_dsn, drop_database, ensure_database

CONFIGS = tuple(MIDDLEWARE)
LABELS = {
    "bare": "bare taskiq",
    "taskiq-prometheus": "taskiq PrometheusMiddleware",
    "exporter": "taskiq-exporter (PostgreSQL)",
}
WARMUP_TASKS = 500
# Task i has name (i // 7) % names: a warm-up of this many tasks per name and worker
# lets every worker process meet every name before measuring (the first sight of a
# name in a process creates its series, a one-time cost kept out of the measurement).
WARMUP_TASKS_PER_NAME_AND_WORKER = 7 * 2
Results = dict[str, list[Burst]]


def settings(burst: int, large_burst: int) -> list[Setting]:
    return [
        Setting("2 workers, 10 names, small args", burst=burst),
        Setting("2 workers, database on own core", burst=burst, database_core=True),
        Setting("1 worker", workers=1, burst=burst),
        Setting("4 workers", workers=4, burst=burst),
        Setting("200 task names", names=200, burst=burst),
        Setting("1 KB args", payload_bytes=1024, burst=burst),
        Setting("100 KB args", payload_bytes=100 * 1024, burst=large_burst),
    ]


async def measure(
    setting: Setting, *, rounds: int, senders: int, database_url: str, redis: Redis, run: Path
) -> tuple[Results, Store]:
    pg = await asyncpg.connect(asyncpg_dsn(database_url))
    groups = {c: Group(c, setting, database_url, run / uuid.uuid4().hex[:8]) for c in CONFIGS}
    try:
        await pg.execute(
            "TRUNCATE task_execution_logs, task_execution_rollups, task_execution_rollups_hourly"
        )
        for group in groups.values():
            await group.start()
        task = 0
        warmup = max(
            WARMUP_TASKS, setting.names * setting.workers * WARMUP_TASKS_PER_NAME_AND_WORKER
        )
        for config, group in groups.items():  # imports, connections, every name's series
            conn = pg if config == "exporter" else None
            await group.burst(redis, conn, task, task + warmup, senders=senders, warmup=True)
            task += warmup
        for r in range(rounds):
            shift = r % len(CONFIGS)
            for config in CONFIGS[shift:] + CONFIGS[:shift]:
                conn = pg if config == "exporter" else None
                await groups[config].burst(redis, conn, task, task + setting.burst, senders=senders)
                task += setting.burst
        pg_cpu = await backend_cpu(pg)
    finally:
        # Every group, even when one fails: no worker may outlive the run.
        stopped = await asyncio.gather(
            *(group.stop() for group in groups.values()), return_exceptions=True
        )
        for group, result in zip(groups.values(), stopped, strict=True):
            if isinstance(result, BaseException):
                print(f"stopping the {group.config} workers failed: {result!r}", file=sys.stderr)
    for group in groups.values():
        group.measure()
    try:
        store = await check_store(pg, groups["exporter"], pg_cpu)
    finally:
        await pg.close()
    return {c: [b for b in g.bursts if not b.warmup] for c, g in groups.items()}, store


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(plan: list[Setting], measured: dict[str, tuple[Results, Store]]) -> str:
    lines = [
        f"{'setting':32} {'configuration':29} {'tasks/s':>7} {'ratio':>5} {'min-max':>9}"
        f" {'best':>5} {'CPU us/task':>11} {'+us':>4} {'CPU ratio':>9} {'log lag s':>9}"
        f" {'lost':>4}"
    ]
    for setting in plan:
        results, store = measured[setting.label]
        bare = results["bare"]
        bare_cpu = statistics.median(b.cpu_us for b in bare)
        for config in CONFIGS:
            runs = results[config]
            ratios = [r.rate / b.rate for r, b in zip(runs, bare, strict=True)]
            cpu = statistics.median(r.cpu_us for r in runs)
            lags = [r.log_lag for r in runs if r.log_lag is not None]
            first = config == "bare"
            lines.append(
                f"{setting.label if first else '':32} {LABELS[config]:29}"
                f" {statistics.median(r.rate for r in runs):7,.0f}"
                f" {statistics.median(ratios):5.2f} {min(ratios):4.2f}-{max(ratios):4.2f}"
                f" {max(r.rate for r in runs) / max(b.rate for b in bare):5.2f}"
                f" {cpu:11,.0f} {'' if first else format(cpu - bare_cpu, '+.0f'):>4}"
                f" {bare_cpu / cpu:9.2f}"
                f" {_fmt(statistics.median(lags) if lags else None, '.2f'):>9}"
                f" {store.lost if config == 'exporter' else '':>4}"
            )
    lines += [
        "",
        "The log (taskiq-exporter; rows/s = a burst's rows over first task to last row logged):",
        f"{'setting':32} {'rows':>7} {'rows/s':>7} {'PG session CPU us/row':>21}"
        f" {'bytes/row':>9} {'after VACUUM FULL':>17}",
    ]
    for setting in plan:
        results, store = measured[setting.label]
        exporter = results["exporter"]
        rows_per_second = statistics.median(r.rows_per_second or 0.0 for r in exporter)
        lines.append(
            f"{setting.label:32} {store.rows:7,} {rows_per_second:7,.0f}"
            f" {_fmt(store.pg_cpu_us, ',.0f'):>21}"
            f" {store.bytes_per_row:9,.0f} {store.compact_bytes_per_row:17,.0f}"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="bursts per configuration")
    parser.add_argument("--burst", type=int, default=5_000, help="tasks per burst")
    parser.add_argument("--large-burst", type=int, default=1_000, help="... of 100 KB args")
    parser.add_argument("--senders", type=int, default=2, help="processes filling a burst")
    parser.add_argument("--only", nargs="*", help="run only the settings with these labels")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        help="server to create a scratch database on (its database name is ignored)",
    )  # fmt: skip
    args = parser.parse_args()
    plan = settings(args.burst, args.large_burst)
    plan = [s for s in plan if not args.only or s.label in args.only]
    url = args.database_url.rsplit("/", 1)[0] + f"/texp_bench_tp_{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    measured: dict[str, tuple[Results, Store]] = {}
    redis = Redis.from_url(args.redis_url)
    workdir = Path(tempfile.mkdtemp(prefix="texp-bench-tp-"))
    await ensure_database(url)
    try:
        await upgrade(url)
        for setting in plan:
            async with contextlib.AsyncExitStack() as stack:
                if setting.database_core:
                    try:
                        split = await stack.enter_async_context(database_core(url, redis))
                    except PinningUnavailable as exc:
                        print(f"skipped {setting.label!r}: {exc}", file=sys.stderr)
                        continue
                    print(split, file=sys.stderr)
                measured[setting.label] = await measure(
                    setting, rounds=args.rounds, senders=args.senders, database_url=url,
                    redis=redis, run=workdir,
                )  # fmt: skip
            print(f"[{time.monotonic() - started:4.0f}s] {setting.label}", file=sys.stderr)
    except BaseException:
        print(f"the processes' output is kept in {workdir}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(workdir)
    finally:
        await redis.aclose()
        await drop_database(url)
    print(
        f"Redis ListQueueBroker; `taskiq worker` draining pre-filled bursts of no-op tasks"
        f" (5% fail, 4% retried); {args.rounds} rounds, configurations interleaved; tasks/s ="
        f" median burst; ratio = tasks/s over bare's in the same round (median, min-max);"
        f" best = best burst over bare's best; CPU ratio = bare's worker CPU per task over"
        f" this one's; {time.monotonic() - started:.0f} s in all"
    )
    print(report([s for s in plan if s.label in measured], measured))


if __name__ == "__main__":
    asyncio.run(main())
