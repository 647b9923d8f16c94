"""Latency of a /metrics scrape: 200 task names from 4 worker processes (goal: under 50 ms).

    python -m benchmarks.bench_scrape [--server-url postgresql+asyncpg://postgres@127.0.0.1/postgres]
        [--broker-queues 20 [--broker-kinds list,stream,amqp,nats]]

Four real processes create the product's metrics (Instruments + Aggregator, as the
middleware does) for 200 task names in one PROMETHEUS_MULTIPROC_DIR and stay alive
(their live gauges count). Then, side by side and interleaved over rounds, in this
process: prometheus_client's MultiProcessCollector, the previous collector (read
every file to validate it, then merge: two reads) and exporter's collector, each
collect + exposition. Last, `taskiq-exporter serve` on a fresh PostgreSQL database
and GET /metrics with httpx, one request at a time.

With --broker-queues N, also the scrape that inspects a broker (serve --broker):
one service without a broker beside one per broker kind, all on the same files and
database, scraped in turn. A Redis stream or AMQP broker reads N queues, a Redis
list or a NATS stream one (that is all such a broker reads); every queue holds
messages, and the cache is off, so every scrape inspects the broker (the worst
case: by default a scrape reuses an inspection younger than 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.engine import make_url

from benchmarks.options import add_server_url
from benchmarks.ports import free_port
from exporter.metrics import multiprocess as mp
from exporter.settings import DEFAULT_DURATION_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS
from exporter.store.migrate import upgrade
from exporter.store.pg_admin import drop_database, ensure_database
from tests.helpers import brokers, processes

TASK_NAMES = 200
PROCESSES = 4
# The brokers that read several queues; the others read one.
MULTI_QUEUE = ("stream", "amqp")
BROKER_APP = "tests.helpers.backlog_app:broker"


def fill(directory: str, process: int, ready: Event, stop: Event) -> None:
    """One worker process: every series of 200 task names, observed a little."""
    # Before the first metric exists, as the middleware's Runtime does.
    mp.enable_multiprocess(directory)
    from exporter.metrics.aggregator import Aggregator
    from exporter.metrics.instruments import Instruments

    inst = Instruments(
        CollectorRegistry(),
        duration_buckets=DEFAULT_DURATION_BUCKETS,
        queue_wait_buckets=DEFAULT_QUEUE_WAIT_BUCKETS,
    )
    agg = Aggregator(inst)
    for i in range(TASK_NAMES):
        tally = agg.task(f"app.tasks.module_{i % 17}:task_{i:03d}")
        for j in range(20 + process):
            seconds = 0.001 * (1.7 ** (j % 24))
            tally.sent += 1
            tally.started += 1
            tally.queue_wait.observe(seconds / 3)
            status = "failed" if j % 10 == 0 else "success"
            setattr(tally, status, getattr(tally, status) + 1)
            tally.duration[status].observe(seconds)
        tally.in_progress = process % 2
    agg.apply()
    inst.rows_written.inc(TASK_NAMES * 20)
    inst.flush_seconds.observe(0.004)
    inst.buffer_rows.set(3)
    ready.set()
    stop.wait(600)


class ValidateThenMerge(Collector):
    """The collector before this benchmark: every file read once to validate it,
    then prometheus_client's merge reads it again."""

    def __init__(self, directory: str) -> None:
        self._dir = directory

    def collect(self) -> Iterable[Metric]:
        mp.reap_dead_processes(self._dir)
        files = [f for f in glob.glob(os.path.join(self._dir, "*.db")) if _readable(f)]
        merged: Iterable[Metric] = MultiProcessCollector.merge(files, accumulate=True)
        return merged


class Fixed(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def _readable(path: str) -> bool:
    from prometheus_client.mmap_dict import MmapedDict

    try:
        for _ in MmapedDict.read_all_values_from_file(path):
            pass
    except Exception:
        return False
    return True


def registry_of(collector: Callable[[CollectorRegistry], object]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    collector(registry)
    return registry


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, samples: list[float], note: str = "") -> str:
    p50, p95, p99 = (percentile(samples, q) for q in (0.5, 0.95, 0.99))
    return f"{label:<46} {p50:7.2f} {p95:7.2f} {p99:7.2f} {max(samples):7.2f}  {note}"


def in_process(directory: str, rounds: int) -> list[tuple[str, list[float], str]]:
    stock = registry_of(lambda r: MultiProcessCollector(r, path=directory))
    previous = registry_of(lambda r: r.register(ValidateThenMerge(directory)))
    ours = mp.multiprocess_registry(directory)
    cases: dict[str, Callable[[], bytes]] = {
        "prometheus_client MultiProcessCollector + text": lambda: generate_latest(stock),
        "previous collector (validate, merge) + text": lambda: generate_latest(previous),
        "exporter collector: collect() + text": lambda: generate_latest(ours),
        "exporter collector: render, text": lambda: mp.exposition(ours),
        "exporter collector: render, OpenMetrics": lambda: mp.exposition(
            ours, openmetrics_format=True
        ),
    }
    # The same output as prometheus_client's merge of the same files in the same (sorted)
    # order: MultiProcessCollector takes them in directory order, which changes the
    # order of the lines and, in the last digit, float sums.
    files = sorted(glob.glob(os.path.join(directory, "*.db")))
    merged = registry_of(lambda r: r.register(Fixed(MultiProcessCollector.merge(files))))
    # The collector's own output: the registry adds the fallback gauge after it.
    same = ours.collector.render().encode() == generate_latest(merged)
    times: dict[str, list[float]] = {name: [] for name in cases}
    sizes: dict[str, int] = {}
    for _ in range(rounds):  # interleaved: the machine's noise hits every case alike
        for name, render in cases.items():
            started = time.perf_counter()
            sizes[name] = len(render())
            times[name].append((time.perf_counter() - started) * 1000)
    note = "identical to prometheus_client's" if same else "DIFFERS from prometheus_client's"
    out = [(name, times[name], f"{sizes[name]:,} bytes") for name in cases]
    out[-2] = (out[-2][0], out[-2][1], f"{out[-2][2]}, {note}")
    return out


def scrape(base: str, requests: int, warmup: int, accept: str) -> list[float]:
    samples = []
    with httpx.Client(base_url=base, timeout=30, headers={"accept": accept}) as client:
        for i in range(warmup + requests):
            started = time.perf_counter()
            response = client.get("/metrics")
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            if i >= warmup:
                samples.append(elapsed)
    return samples


async def inspect_alone(kind: str, queue: str, count: int, rounds: int) -> list[float]:
    """The inspection alone, as the service runs it (its inspector), in ms."""
    from exporter.brokers.select import inspector_for

    inspector = inspector_for(
        brokers.make_broker(kind, queue, queues=count), sent_time=lambda labels: None
    )
    assert inspector is not None
    samples = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            stats = await inspector.inspect()
            samples.append((time.perf_counter() - started) * 1000)
            if len(stats) != count or not all(s.messages for s in stats):
                raise SystemExit(f"{kind}: the inspection did not see the queues: {stats}")
    finally:
        await inspector.close()
    return samples


def backlog(
    env: dict[str, str], kinds: list[str], queues: int, args: argparse.Namespace
) -> list[tuple[str, list[float], str]]:
    """p50... of GET /metrics without broker inspection and with each broker's, in turn."""
    run = uuid.uuid4().hex[:8]
    filled: list[tuple[str, str, int]] = []
    try:
        with contextlib.ExitStack() as stack:
            bases = {"no broker": stack.enter_context(processes.service(env, free_port()))}
            expected = {"no broker": 0}
            for kind in kinds:
                count = queues if kind in MULTI_QUEUE else 1
                queue = f"texp_bench_{kind}_{run}"
                filled.append((kind, queue, count))
                asyncio.run(brokers.fill(kind, queue, queues=count, messages=args.broker_messages))
                inspected = {
                    **env,
                    "TASKIQ_EXPORTER_BROKER": BROKER_APP,
                    "TASKIQ_EXPORTER_BROKER_INSPECT_CACHE_SECONDS": "0",
                    "TEST_BROKER": kind,
                    "TEST_QUEUE": queue,
                    "TEST_QUEUES": str(count),
                }
                label = f"{kind}: {count} queue{'s' if count > 1 else ''} inspected"
                bases[label] = stack.enter_context(processes.service(inspected, free_port()))
                expected[label] = count
            clients = {
                label: stack.enter_context(httpx.Client(base_url=base, timeout=30))
                for label, base in bases.items()
            }
            times: dict[str, list[float]] = {label: [] for label in clients}
            for i in range(args.warmup + args.requests):
                for label, client in clients.items():  # in turn: the noise hits all alike
                    started = time.perf_counter()
                    response = client.get("/metrics")
                    elapsed = (time.perf_counter() - started) * 1000
                    response.raise_for_status()
                    if i >= args.warmup:
                        times[label].append(elapsed)
            alone = {
                f"{kind}: inspect() alone, {count} queue{'s' if count > 1 else ''}": asyncio.run(
                    inspect_alone(kind, queue, count, args.requests)
                )
                for kind, queue, count in filled
            }
            notes = {}
            for label, client in clients.items():
                body = client.get("/metrics").text
                found = body.count("\ntaskiq_queue_messages{")
                if found != expected[label] or (
                    expected[label] and "inspection_up 1.0" not in body
                ):
                    raise SystemExit(f"{label}: {found} queues exported, not {expected[label]}")
                notes[label] = f"{len(body):,} bytes"
    finally:
        for kind, queue, count in filled:
            asyncio.run(brokers.remove(kind, queue, queues=count))
    base_p95 = percentile(times["no broker"], 0.95)
    return [
        *(
            (label, samples, f"{notes[label]}, p95 x{percentile(samples, 0.95) / base_p95:.2f}")
            for label, samples in times.items()
        ),
        *((label, samples, "in this process") for label, samples in alone.items()),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_url(parser)
    parser.add_argument("--requests", type=int, default=200, help="HTTP scrapes per format")
    parser.add_argument("--rounds", type=int, default=30, help="in-process rounds")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--broker-queues",
        type=int,
        default=0,
        help="also scrape with broker inspection: queues per Redis stream / AMQP broker",
    )
    parser.add_argument("--broker-kinds", default=",".join(brokers.KINDS))
    parser.add_argument("--broker-messages", type=int, default=5, help="waiting per queue")
    parser.add_argument(
        "--broker-only", action="store_true", help="with --broker-queues: only that comparison"
    )
    args = parser.parse_args(argv)
    kinds = [k for k in args.broker_kinds.split(",") if k]
    if unknown := set(kinds) - set(brokers.KINDS):
        parser.error(f"unknown broker kinds: {sorted(unknown)}")

    directory = tempfile.mkdtemp(prefix="texp-bench-scrape-")
    mp.reset_directory(directory)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    workers = []
    for i in range(PROCESSES):
        ready = ctx.Event()
        proc = ctx.Process(target=fill, args=(directory, i, ready, stop), daemon=True)
        proc.start()
        workers.append((proc, ready))
    for proc, ready in workers:
        if not ready.wait(60):
            raise SystemExit(f"worker {proc.pid} did not start")
    files = sorted(Path(directory).glob("*.db"))
    size = sum(f.stat().st_size for f in files)

    url = make_url(args.server_url).set(database=f"texp_bench_{uuid.uuid4().hex[:8]}")
    db_url = url.render_as_string(hide_password=False)
    asyncio.run(ensure_database(db_url))
    try:
        asyncio.run(upgrade(db_url))
        env = processes.environment(db_url, Path(directory), TASKIQ_EXPORTER_MAINTENANCE="false")
        if not (args.broker_only and args.broker_queues):
            local = in_process(directory, args.rounds)
            with processes.service(env, args.port or free_port()) as base:
                started = time.perf_counter()
                httpx.get(f"{base}/metrics", timeout=30).raise_for_status()
                cold = (time.perf_counter() - started) * 1000
                http_text = scrape(base, args.requests, args.warmup, "text/plain")
                http_om = scrape(base, args.requests, args.warmup, "application/openmetrics-text")
                body = httpx.get(f"{base}/metrics").text
        inspected = backlog(env, kinds, args.broker_queues, args) if args.broker_queues else []
    finally:
        stop.set()
        for proc, _ in workers:
            proc.join(10)
        asyncio.run(drop_database(db_url))
        shutil.rmtree(directory, ignore_errors=True)

    print(
        f"{PROCESSES} processes x {TASK_NAMES} task names: {len(files)} files, {size:,} bytes. "
        f"{os.cpu_count()} cores, shared: compare rows of this run, not runs."
    )
    if not (args.broker_only and args.broker_queues):
        report(args, local, http_text, http_om, cold, body)
    if inspected:
        print(f"{'HTTP, broker inspected at every scrape (ms)':<46} {'p50':>7} {'p95':>7} "
              f"{'p99':>7} {'max':>7}")  # fmt: skip
        for label, samples, note in inspected:
            print(row(label, samples, note))
        worst = max(percentile(samples, 0.95) for label, samples, _ in inspected[: len(kinds) + 1])
        verdict = "meets" if worst < 50 else "MISSES"
        print(f"worst HTTP p95 with broker inspection {worst:.2f} ms: {verdict} the 50 ms bound")


def report(
    args: argparse.Namespace,
    local: list[tuple[str, list[float], str]],
    http_text: list[float],
    http_om: list[float],
    cold: float,
    body: str,
) -> None:
    series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    print(f"the scrape has {series:,} samples")
    print(f"{'in process (ms, ' + str(args.rounds) + ' rounds)':<46} {'p50':>7} {'p95':>7} "
          f"{'p99':>7} {'max':>7}")  # fmt: skip
    for label, samples, note in local:
        print(row(label, samples, note))
    print(f"{'HTTP (ms, ' + str(args.requests) + ' scrapes each)':<46}")
    print(row("HTTP GET /metrics (text, service on PostgreSQL)", http_text, f"{len(body):,} bytes"))
    print(row("HTTP GET /metrics (OpenMetrics)", http_om))
    print(f"  the service's first scrape (files parsed, lines learnt): {cold:.0f} ms")
    verdict = "meets" if percentile(http_text, 0.95) < 50 else "MISSES"
    print(f"p95 of the HTTP scrape {percentile(http_text, 0.95):.2f} ms: {verdict} the 50 ms bound")


if __name__ == "__main__":
    main()
