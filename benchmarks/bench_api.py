"""Latency of the JSON API through HTTP, on a store filled by benchmarks.seed_history.

    python -m benchmarks.bench_api --database-url postgresql+asyncpg://.../texp_bench

Starts the service under uvicorn in a child process, then sends each query shape
``--requests`` times, one at a time, after a warm-up, and prints p50/p95/p99 (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


async def measure(base: str, requests: int, warmup: int) -> list[tuple[str, list[float], str]]:
    results = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        cases = shapes()
        first = (await client.get(f"{API}/history", params={"page_size": 1})).json()["items"]
        if first:
            cases.append(("detail by id", f"{API}/history/{first[0]['id']}", {}))
        deep = (await client.get(f"{API}/history", params={"page": 2000})).json()
        if deep.get("next_cursor"):
            cases.append(
                ("history cursor after p2000", f"{API}/history", {"cursor": deep["next_cursor"]})
            )
        for label, path, params in cases:
            samples = []
            note = ""
            for i in range(warmup + requests):
                started = time.perf_counter()
                response = await client.get(path, params=params)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise SystemExit(f"{label}: HTTP {response.status_code} {response.text[:200]}")
                if i >= warmup:
                    samples.append(elapsed)
                if i == 0 and path.endswith("/history"):
                    body = response.json()
                    note = f"total={body['total_count']:,} items={len(body['items'])}"
            results.append((label, samples, note))
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    env = {**os.environ, "TASKIQ_EXPORTER_DATABASE_URL": args.database_url}
    env.pop("TASKIQ_EXPORTER_API_TOKEN", None)
    # A stable data set: no retention or reaper runs while measuring.
    env["TASKIQ_EXPORTER_MAINTENANCE"] = "false"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.bench_api:make_app",
            "--factory",
            "--port",
            str(args.port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{args.port}"
    try:
        wait_ready(base, proc)
        results = asyncio.run(measure(base, args.requests, args.warmup))
        if args.database_url.startswith("postgresql"):
            dsn = asyncpg_dsn(args.database_url)
            host = f"127.0.0.1:{args.port}"
            latency = asyncio.run(event_latency(host, dsn, args.requests))
            results.append(("event NOTIFY -> WebSocket", latency, ""))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"{'shape':<34} {'p50':>7} {'p95':>7} {'p99':>7}  (ms, {args.requests} requests)")
    for label, samples, note in results:
        p50, p95, p99 = (percentile(samples, q) for q in (0.5, 0.95, 0.99))
        print(f"{label:<34} {p50:7.2f} {p95:7.2f} {p99:7.2f}  {note}")
    worst = max(percentile(s, 0.95) for _, s, _ in results)
    medians = statistics.mean(percentile(s, 0.5) for _, s, _ in results)
    print(f"worst p95: {worst:.2f} ms; mean of the medians {medians:.2f} ms")


if __name__ == "__main__":
    main()
