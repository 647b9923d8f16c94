"""Latency of the JSON API through HTTP, on a store filled by benchmarks.seed_history.

    python -m benchmarks.bench_api --database-url postgresql+asyncpg://.../texp_bench

Starts the service under uvicorn in a child process, then sends each query shape
``--requests`` times, one at a time, after a warm-up, and prints p50/p95/p99 (ms).
With ``--compare-url`` a second service reads a second store (10 million rows beside
100 million, say): each shape alternates between the two and the ratio of their
p95 is printed, measured side by side in one run.

The search shapes (``--only search``) look for error messages and arguments of the
seeded store: within the dashboards' default range (the 3 hours up to the newest
row), within a day, and over everything kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from starlette.applications import Starlette
from websockets.asyncio.client import connect

from exporter.app import create_app
from exporter.events import PG_CHANNEL
from exporter.settings import ExporterSettings
from exporter.store.pg_admin import asyncpg_dsn

API = "/api/v1/monitoring"
COMMON = "app.tasks:send_email"  # 25 % of the seeded rows
RARE = "app.tasks:rebuild_search_index"  # 2 %


def make_app() -> Starlette:
    """uvicorn --factory entry point: settings from TASKIQ_EXPORTER_* variables."""
    return create_app(ExporterSettings())


def shapes() -> list[tuple[str, str, dict[str, Any]]]:
    day_end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=10)
    day = {"start_date": (day_end - timedelta(days=1)).isoformat(), "end_date": day_end.isoformat()}
    out: list[tuple[str, str, dict[str, Any]]] = []
    for label, params in (
        ("history", {}),
        ("history task_name (25%)", {"task_name": COMMON}),
        ("history task_name (2%)", {"task_name": RARE}),
        ("history task_name+failed", {"task_name": COMMON, "status": "failed"}),
        ("history task_name+failed (2%)", {"task_name": RARE, "status": "failed"}),
        ("history status=failed", {"status": "failed"}),
        ("history one day", day),
    ):
        for page in (1, 2000):
            out.append((f"{label} p{page}", f"{API}/history", {**params, "page": page}))
    for hours in (1, 24, 168, 720):
        out.append((f"metrics {hours}h", f"{API}/metrics", {"time_window": hours}))
    out.append(("tasks", f"{API}/tasks", {}))
    out.append(("/metrics scrape", "/metrics", {}))
    return out


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# (label, filters): seed_history's error messages and arguments. "rare": a handful of
# rows in 10 million; "common": a fifth of the failed rows.
SEARCHES: tuple[tuple[str, dict[str, str]], ...] = (
    ("error rare", {"error": "ord-424242"}),
    ("error common", {"error": "timed out"}),
    ("error none", {"error": "no such message"}),
    ("param user_id", {"param.user_id": "4242"}),
    ("param order_id", {"param.order_id": "ord-424242"}),
    ("param 0 + user_id", {"param.0": "42", "param.user_id": "4242"}),
    ("param + error", {"param.user_id": "4242", "error": "user 4242"}),
)
# The dashboards' default time range.
DEFAULT_RANGE = timedelta(hours=3)


def search_shapes(newest: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    """Each search within the default range and a day up to ``newest``, and unbounded."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    end = (newest + timedelta(seconds=1)).isoformat()
    for label, filters in SEARCHES:
        for span, width in (("3h", DEFAULT_RANGE), ("24h", timedelta(days=1)), ("all", None)):
            dates = {} if width is None else {"start_date": (newest - width).isoformat()}
            if width is not None:
                dates["end_date"] = end
            out.append((f"search {label} ({span})", f"{API}/history", {**filters, **dates}))
    return out


async def cases_of(client: httpx.AsyncClient) -> list[tuple[str, str, dict[str, Any]]]:
    """The shapes, with a detail id and a deep cursor read from this store."""
    cases = shapes()
    first = (await client.get(f"{API}/history", params={"page_size": 1})).json()["items"]
    if first:
        cases.append(("detail by id", f"{API}/history/{first[0]['id']}", {}))
        cases.extend(search_shapes(datetime.fromisoformat(first[0]["created_at"])))
    deep = (await client.get(f"{API}/history", params={"page": 2000})).json()
    if deep.get("next_cursor"):
        cases.append(
            ("history cursor after p2000", f"{API}/history", {"cursor": deep["next_cursor"]})
        )
    return cases


async def measure(
    bases: list[str], requests: int, warmup: int, only: str | None = None
) -> list[tuple[str, list[list[float]], str]]:
    """Each shape's latencies on every service, the requests alternating between
    them (so that the machine's drift weighs on all of them alike)."""
    results = []
    clients = [httpx.AsyncClient(base_url=base, timeout=60) for base in bases]
    try:
        per_store = [{label: (path, params) for label, path, params in await cases_of(c)}
                     for c in clients]  # fmt: skip
        labels = [label for label in per_store[0] if all(label in p for p in per_store)]
        labels = [label for label in labels if only is None or re.search(only, label)]
        for label in labels:
            samples: list[list[float]] = [[] for _ in clients]
            notes = []
            for i in range(warmup + requests):
                order = range(len(clients)) if i % 2 == 0 else reversed(range(len(clients)))
                for k in order:
                    path, params = per_store[k][label]
                    started = time.perf_counter()
                    response = await clients[k].get(path, params=params)
                    elapsed = (time.perf_counter() - started) * 1000
                    if response.status_code != 200:
                        raise SystemExit(
                            f"{label}: HTTP {response.status_code} {response.text[:200]}"
                        )
                    if i >= warmup:
                        samples[k].append(elapsed)
                    if i == 0 and path.endswith("/history"):
                        body = response.json()
                        more = "" if body.get("total_count_exact", True) else "+"
                        notes.append(
                            f"total={body['total_count']:,}{more} items={len(body['items'])}"
                        )
            results.append((label, samples, " / ".join(notes)))
    finally:
        for client in clients:
            await client.aclose()
    return results


async def event_latency(host: str, dsn: str, events: int) -> list[float]:
    """Milliseconds from a committed batch (a row stamped `now` and the NOTIFY of
    that stamp, what a writer's flush does) to the WebSocket client: the
    service's share of the event latency."""
    samples = []
    async with connect(f"ws://{host}{API}/events?task_name=bench:event") as ws:
        conn = await asyncpg.connect(dsn)
        try:
            await asyncio.sleep(0.5)  # the subscription is registered after the handshake
            for i in range(events):
                now = datetime.now(UTC)
                started = time.perf_counter()
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO task_execution_logs (task_name, status, task_id, attempt,"
                        " started_at, completed_at, duration_ms, created_at, updated_at)"
                        " VALUES ('bench:event', 'success', $1, 1, $2, $2, 1.0, $2, $2)",
                        f"lat-{i}-{now.timestamp()}",
                        now,
                    )
                    await conn.execute("SELECT pg_notify($1, $2)", PG_CHANNEL, now.isoformat())
                # running then success: wait for the terminal one
                while json.loads(await asyncio.wait_for(ws.recv(), 5))["status"] != "success":
                    pass
                samples.append((time.perf_counter() - started) * 1000)
        finally:
            await conn.close()
    return samples


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the service exited")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the service did not become ready (migrated store?)")


def start_service(url: str, port: int, code: str | None = None) -> subprocess.Popen[bytes]:
    """The service on ``url``; with ``code``, the one of that checkout (another
    revision's working tree): its modules come first on the child's path."""
    env = {**os.environ, "TASKIQ_EXPORTER_DATABASE_URL": url}
    if code is not None:
        env["PYTHONPATH"] = os.path.abspath(code)
    env.pop("TASKIQ_EXPORTER_API_TOKEN", None)
    env.pop("TASKIQ_EXPORTER_READ_DATABASE_URL", None)
    # A stable data set: no retention or reaper runs while measuring.
    env["TASKIQ_EXPORTER_MAINTENANCE"] = "false"
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.bench_api:make_app", "--factory",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, cwd=code,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument(
        "--compare-url",
        help="a second store (say 10 million rows beside --database-url's 100 million): "
        "every shape on both, alternating, and the ratio of their p95",
    )
    parser.add_argument(
        "--compare-code",
        metavar="DIR",
        help="with --compare-url (or alone: the same store), B runs the code of this "
        "checkout of another revision (git worktree add DIR REV): old and new code side "
        "by side",
    )
    parser.add_argument(
        "--only", metavar="REGEX", help="the shapes whose label matches (default: every one)"
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    compare_url = args.compare_url or (args.database_url if args.compare_code else None)
    urls = [args.database_url] + ([compare_url] if compare_url else [])
    codes = [None, args.compare_code]
    procs = [start_service(url, args.port + i, codes[i]) for i, url in enumerate(urls)]
    bases = [f"http://127.0.0.1:{args.port + i}" for i in range(len(urls))]
    try:
        for base, proc in zip(bases, procs, strict=True):
            wait_ready(base, proc)
        results = asyncio.run(measure(bases, args.requests, args.warmup, args.only))
        if args.database_url.startswith("postgresql") and not compare_url:
            dsn = asyncpg_dsn(args.database_url)
            host = f"127.0.0.1:{args.port}"
            latency = asyncio.run(event_latency(host, dsn, args.requests))
            results.append(("event NOTIFY -> WebSocket", [latency], ""))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    if compare_url:
        report_ratio(results, args.requests)
        return
    print(f"{'shape':<34} {'p50':>7} {'p95':>7} {'p99':>7}  (ms, {args.requests} requests)")
    for label, (samples,), note in results:
        p50, p95, p99 = (percentile(samples, q) for q in (0.5, 0.95, 0.99))
        print(f"{label:<34} {p50:7.2f} {p95:7.2f} {p99:7.2f}  {note}")
    worst = max(percentile(s, 0.95) for _, (s,), _ in results)
    medians = statistics.mean(percentile(s, 0.5) for _, (s,), _ in results)
    print(f"worst p95: {worst:.2f} ms; mean of the medians {medians:.2f} ms")


def report_ratio(results: list[tuple[str, list[list[float]], str]], requests: int) -> None:
    print(
        f"{'shape':<34} {'p95 A':>8} {'p95 B':>8} {'A/B':>6}  (ms, {requests} requests each;"
        " A = --database-url, B = --compare-url and/or --compare-code)"
    )
    ratios = []
    for label, (a, b), note in results:
        pa, pb = percentile(a, 0.95), percentile(b, 0.95)
        ratios.append(pa / pb)
        print(f"{label:<34} {pa:8.2f} {pb:8.2f} {pa / pb:6.2f}  {note}")
    print(f"A/B of p95: {min(ratios):.2f} to {max(ratios):.2f}; worst p95 of A"
          f" {max(percentile(a, 0.95) for _, (a, _b), _ in results):.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
