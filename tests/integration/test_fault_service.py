"""The service is a reader: restarting it under load goes unnoticed by the
workers, and two replicas on one database answer alike.

Real ``taskiq worker --workers 2`` processes on Redis and real ``taskiq-exporter
serve`` processes, all on one PostgreSQL database and one metrics directory.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.helpers import processes as p
from tests.helpers.load import Load
from tests.helpers.observe import (
    Db,
    Samples,
    database,
    scrape,
    service,
    start_service,
    stop_process,
    value,
)
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

RATE = 100.0
API = "/api/v1/monitoring"
COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")


def done(s: Samples, status: str = "success") -> float:
    return value(s, "taskiq_tasks_completed_total", task_name="w:quick", status=status)


def assert_monotonic(scrapes: list[Samples]) -> None:
    """Every counter series of every scrape is still there, at least as high, in the next."""
    for before, after in itertools.pairwise(scrapes):
        for key, old in before.items():
            if key[0].endswith(COUNTER_SUFFIXES):
                assert key in after, f"{key} disappeared"
                assert after[key] >= old, (key, old, after[key])


def at_least(db: Db, rows: float) -> bool:
    return db.count("status = 'success'") >= rows


def moved_on(base: str, last: float) -> bool:
    return done(scrape(base)) > last


def test_restarting_the_service_under_load_goes_unnoticed(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    p.require_redis()
    env = p.environment(pg_store, tmp_path / "metrics")
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    scrapes: list[Samples] = []
    with database(pg_store) as db, p.worker(env) as workers:
        wait_for(lambda: len(p.child_pids(workers.pid)) == 2, what="two worker processes")
        children = set(p.child_pids(workers.pid))
        with Load(env, RATE) as load:
            proc = start_service(env, port)
            try:
                wait_for(lambda: done(scrape(base)) >= RATE, what="metrics flow")
                for stop in (signal.SIGKILL, signal.SIGTERM):
                    scrapes.append(scrape(base))
                    proc.send_signal(stop)
                    proc.wait(30)
                    with pytest.raises(httpx.TransportError):
                        scrape(base)
                    # The workers go on while nobody reads.
                    target = db.count("status = 'success'") + RATE
                    wait_for(partial(at_least, db, target), what="rows written while it is down")
                    proc = start_service(env, port)
                    scrapes.append(scrape(base))
                    wait_for(partial(moved_on, base, done(scrapes[-1])), what="counts move on")
                    scrapes.append(scrape(base))
                    history = httpx.get(f"{base}{API}/history", timeout=10)
                    assert history.status_code == 200
                    assert history.json()["total_count"] >= target
                sent = load.stop()
                wait_for(lambda: done(scrape(base)) == sent, what="every task counted")
                scrapes.append(scrape(base))
            finally:
                stop_process(proc)
        wait_for(lambda: db.count("status = 'success'") == sent, what="every row written")
        assert set(p.child_pids(workers.pid)) == children
    final = scrapes[-1]
    assert done(final, "failed") == 0
    assert value(final, "taskiq_tasks_sent_total", task_name="w:quick") == sent
    assert value(final, "taskiq_exporter_log_rows_dropped_total") == 0
    assert db_rows(pg_store) == sent
    assert_monotonic(scrapes)


def db_rows(url: str) -> int:
    with database(url) as db:
        return db.count()


def get(base: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{base}{API}{path}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def every_item(base: str, **filters: Any) -> list[dict[str, Any]]:
    """The whole history for ``filters``, walked with cursors."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {**filters, "page_size": 200, **({"cursor": cursor} if cursor else {})}
        page = get(base, "/history", **params)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def collect(ws: ClientConnection, task_ids: set[str], seconds: float) -> list[dict[str, Any]]:
    """Events until every task in ``task_ids`` has had its terminal event."""
    events: list[dict[str, Any]] = []
    finished: set[str] = set()
    deadline = time.monotonic() + seconds
    while not task_ids <= finished:
        remaining = deadline - time.monotonic()
        try:
            message = json.loads(ws.recv(timeout=max(remaining, 0.01)))
        except TimeoutError:
            raise AssertionError(
                f"terminal events for {len(finished & task_ids)} of {len(task_ids)} tasks "
                f"within {seconds} s"
            ) from None
        if message.get("type") != "task_event":
            continue
        events.append(message)
        if message["status"] in ("success", "failed"):
            finished.add(message["data"]["task_id"])
    return events


def terminal(events: list[dict[str, Any]]) -> dict[tuple[str, int, str], str]:
    """The terminal events by (task_id, attempt, status), as JSON without the resume
    cursor. Only these must match across replicas: a replica reads a batch's rows
    when its NOTIFY arrives, so a row that moved on meanwhile (a late client row
    touches a finished one) may skip its ``pending`` event there or carry a later
    ``updated_at``; either is a valid place to resume from."""
    out = {}
    for e in events:
        if e["status"] in ("success", "failed"):
            data = {k: v for k, v in e["data"].items() if k != "updated_at"}
            key = (data["task_id"], data["attempt"], e["status"])
            out[key] = json.dumps({**e, "data": data}, sort_keys=True)
    return out


def test_two_replicas_serve_the_same_history_and_replay(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    p.require_redis()
    env = p.environment(pg_store, tmp_path / "metrics")
    ports = (unused_port(), unused_port())
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    started = datetime.now(UTC) - timedelta(seconds=1)
    with (
        database(pg_store) as db,
        p.worker(env) as workers,
        service(env, ports[0]),
        service(env, ports[1]),
    ):
        wait_for(lambda: len(p.child_pids(workers.pid)) == 2, what="two worker processes")
        p.send(env, 300, 30)
        wait_for(lambda: db.count("status IN ('success', 'failed')") == 300, what="all rows")
        task_ids = {str(t) for t in db.scalars("SELECT task_id FROM task_execution_logs")}

        a, b = (every_item(base) for base in bases)
        assert len(a) == 300
        assert a == b
        for filters in (
            {},
            {"status": "failed"},
            {"task_name": "w:quick", "page": 2, "page_size": 50},
            {"start_date": started.isoformat(), "page_size": 7, "page": 5},
        ):
            pages = [get(base, "/history", **filters) for base in bases]
            assert pages[0] == pages[1], filters
        assert get(bases[0], "/history")["total_count"] == 300
        assert get(bases[0], "/history", status="failed")["total_count"] == 30
        for item in a[::37]:
            assert get(bases[0], f"/history/{item['id']}") == get(
                bases[1], f"/history/{item['id']}"
            )
            path = f"/history/task/{item['task_id']}"
            assert get(bases[0], path) == get(bases[1], path)
        assert get(bases[0], "/tasks") == get(bases[1], "/tasks")
        summaries = [get(base, "/metrics") for base in bases]
        assert [s["metrics"] for s in summaries] == [summaries[0]["metrics"]] * 2

        # Replay from the store (what a reconnecting client gets), from each replica.
        query = urlencode({"since": started.isoformat()})
        replays = []
        for port in ports:
            with connect(f"ws://127.0.0.1:{port}{API}/events?{query}") as ws:
                replays.append(collect(ws, task_ids, 60))
        assert terminal(replays[0]) == terminal(replays[1])
        assert {k[0] for k in terminal(replays[0])} == task_ids


def test_two_replicas_stream_the_same_live_events(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    """Live events from real workers reach a client of either replica, alike."""
    p.require_redis()
    env = p.environment(pg_store, tmp_path / "metrics")
    ports = (unused_port(), unused_port())
    with (
        database(pg_store) as db,
        p.worker(env) as workers,
        service(env, ports[0]),
        service(env, ports[1]),
        connect(f"ws://127.0.0.1:{ports[0]}{API}/events") as ws_a,
        connect(f"ws://127.0.0.1:{ports[1]}{API}/events") as ws_b,
    ):
        wait_for(lambda: len(p.child_pids(workers.pid)) == 2, what="two worker processes")
        # A first task shows both clients are subscribed and the path works at all.
        p.send(env, 1, 0)
        wait_for(lambda: db.count("status = 'success'") == 1, what="the probe's row")
        probe = {str(t) for t in db.scalars("SELECT task_id FROM task_execution_logs")}
        for ws in (ws_a, ws_b):
            collect(ws, probe, 15)
        p.send(env, 200, 20)
        wait_for(lambda: db.count("status IN ('success', 'failed')") == 201, what="all rows")
        task_ids = {str(t) for t in db.scalars("SELECT task_id FROM task_execution_logs")}
        live = [collect(ws, task_ids - probe, 60) for ws in (ws_a, ws_b)]
    assert terminal(live[0]) == terminal(live[1])
    assert {k[0] for k in terminal(live[0])} == task_ids - probe
    assert {e["data"]["task_id"] for e in live[0]} == {e["data"]["task_id"] for e in live[1]}
