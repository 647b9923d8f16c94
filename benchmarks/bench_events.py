"""Latency from a task finishing in a worker process to its event at a WebSocket client.

    python -m benchmarks.bench_events [--rate 50] [--seconds 20] [--flush-intervals 0.05,0.01]

Real processes on this host: `taskiq-exporter worker tests.helpers.worker_app:broker
--workers 2` on Redis with a fresh PostgreSQL store, `taskiq-exporter serve`, a
sender process that kiqs tasks at a steady rate (one in ten fails), and this
process as a client of /api/v1/monitoring/events. For each terminal event:

- completion -> client: receive time minus the event's ``timestamp`` (the worker's
  completed_at, the same host clock): the latency a live view sees (goal: p99 under 100 ms);
- completion -> batch stamp: until the writer began the batch holding the row
  (``data.updated_at``; the writer's flush interval);
- batch stamp -> client: the upsert, commit, NOTIFY, the service's read and the send.

Each flush interval given runs the whole set-up again, one after the other. The
machine is shared: compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from websockets.asyncio.client import ClientConnection, connect

from benchmarks.options import add_server_url
from benchmarks.ports import free_port
from exporter.store.migrate import upgrade
from exporter.store.pg_admin import drop_database, ensure_database
from tests.helpers import processes

EVENTS = "/api/v1/monitoring/events"
TERMINAL = ("success", "failed")


@dataclass
class Received:
    total: list[float] = field(default_factory=list)  # ms, completion -> client
    writer: list[float] = field(default_factory=list)  # ms, completion -> batch stamp
    service: list[float] = field(default_factory=list)  # ms, batch stamp -> client
    statuses: dict[str, int] = field(default_factory=dict)
    task_ids: set[str] = field(default_factory=set)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def receive(ws: ClientConnection, into: Received, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            raw = await asyncio.wait_for(ws.recv(), 0.5)
        except TimeoutError:
            continue
        now = time.time()
        message = json.loads(raw)
        status = message["status"]
        into.statuses[status] = into.statuses.get(status, 0) + 1
        if status not in TERMINAL:
            continue
        completed = epoch(message["timestamp"])
        stamp = epoch(message["data"]["updated_at"])
        into.total.append((now - completed) * 1000)
        into.writer.append((stamp - completed) * 1000)
        into.service.append((now - stamp) * 1000)
        into.task_ids.add(message["data"]["task_id"])


async def send_paced(rate: float, seconds: float) -> int:
    """The sender process: the app's own broker (with the middleware), as a client."""
    from tests.helpers.worker_app import broker, fail, quick

    await broker.startup()
    total = int(rate * seconds)
    start = time.monotonic()
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await (fail if i % 10 == 0 else quick).kiq(i)
    await broker.shutdown()
    return total


async def run_once(
    env: dict[str, str], port: int, rate: float, seconds: float
) -> tuple[int, Received]:
    got = Received()
    with processes.worker(env, workers=2), processes.service(env, port):
        url = f"ws://127.0.0.1:{port}{EVENTS}"
        async with connect(url, max_queue=None) as ws:
            # Workers up and the client subscribed: a probe's event came through.
            probe = Received()
            stop = asyncio.Event()
            reader = asyncio.create_task(receive(ws, probe, stop))
            deadline = time.monotonic() + 60
            while not probe.total:
                if time.monotonic() > deadline:
                    raise SystemExit("no event from the workers within 60 s")
                await _send(env, 1, 1)
                await asyncio.sleep(1)
            await asyncio.sleep(1)
            stop.set()
            await reader
            stop = asyncio.Event()
            reader = asyncio.create_task(receive(ws, got, stop))
            sent = await _send(env, rate, seconds)
            deadline = time.monotonic() + 30
            while len(got.task_ids) < sent and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            stop.set()
            await reader
    return sent, got


async def _send(env: dict[str, str], rate: float, seconds: float) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.bench_events", "--send", str(rate), str(seconds),
        env=env, cwd=processes.ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit("the sender failed")
    return int(out.decode().split()[-1])


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def row(label: str, samples: list[float]) -> str:
    cells = " ".join(f"{percentile(samples, q):7.1f}" for q in (0.5, 0.95, 0.99, 1.0))
    return f"  {label:<28} {cells}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_url(parser)
    parser.add_argument("--rate", type=float, default=50.0, help="tasks per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--flush-intervals", default="0.05", help="writer intervals, comma-separated"
    )
    parser.add_argument("--send", nargs=2, metavar=("RATE", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.send:
        print(asyncio.run(send_paced(float(args.send[0]), float(args.send[1]))))
        return

    results = []
    log = Path(tempfile.gettempdir()) / "texp-bench-events.log"
    log.unlink(missing_ok=True)
    print(f"the processes' output (one traceback per failed task) goes to {log}")
    for interval in args.flush_intervals.split(","):
        url = make_url(args.server_url).set(database=f"texp_bench_{uuid.uuid4().hex[:8]}")
        db_url = url.render_as_string(hide_password=False)
        metrics_dir = Path(tempfile.mkdtemp(prefix="texp-bench-events-"))
        asyncio.run(ensure_database(db_url))
        try:
            asyncio.run(upgrade(db_url))
            env = processes.environment(
                db_url, metrics_dir, TASKIQ_EXPORTER_FLUSH_INTERVAL_SECONDS=interval
            )
            env.setdefault("PYTHONUNBUFFERED", "1")
            port = free_port()
            with _output_to(log):
                outcome = asyncio.run(run_once(env, port, args.rate, args.seconds))
            results.append((interval, *outcome))
        finally:
            asyncio.run(drop_database(db_url))
            shutil.rmtree(metrics_dir, ignore_errors=True)

    print(
        f"\n{args.rate:g} tasks/s for {args.seconds:g} s (1 in 10 fails), 2 worker processes, "
        f"Redis + PostgreSQL, {os.cpu_count()} shared cores"
    )
    print(f"  {'latency (ms)':<28} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}")
    for interval, sent, got in results:
        counts = ", ".join(f"{s} {n}" for s, n in sorted(got.statuses.items()))
        print(f"flush interval {interval} s: {len(got.task_ids)} of {sent} tasks' terminal "
              f"events received ({counts})")  # fmt: skip
        print(row("completion -> client", got.total))
        print(row("  completion -> batch stamp", got.writer))
        print(row("  batch stamp -> client", got.service))
        verdict = "meets" if percentile(got.total, 0.99) < 100 else "MISSES"
        print(f"  p99 {percentile(got.total, 0.99):.1f} ms: {verdict} the 100 ms bound")


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's and its children's stdout and stderr to a file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


if __name__ == "__main__":
    main()
