"""Live events from a real `taskiq worker` process (the real middleware and writer,
PostgreSQL NOTIFY) to WebSocket clients of the real service: statuses, filters,
and a reconnect with ?since= that misses nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import create_engine, text
from websockets.sync.client import ClientConnection, connect

from tests.helpers import processes as p
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration
EVENTS = "/api/v1/monitoring/events"
Event = dict[str, Any]


def finished_ids(url: str, task_name: str | None = None) -> set[str]:
    """task_ids of the finished rows (read synchronously with pg8000)."""
    engine = create_engine(url.replace("postgresql+asyncpg", "postgresql+pg8000"))
    where = "status IN ('success', 'failed')" + (" AND task_name = :name" if task_name else "")
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT task_id FROM task_execution_logs WHERE {where}"), {"name": task_name}
        )
        ids = {str(r[0]) for r in rows}
    engine.dispose()
    return ids


def receive_until(
    ws: ClientConnection, done: Callable[[list[Event]], bool], seconds: float = 60
) -> list[Event]:
    events: list[Event] = []
    deadline = time.monotonic() + seconds
    while not done(events):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"condition not met in {seconds}s; got {events[-5:]}")
        try:
            events.append(json.loads(ws.recv(timeout=left)))
        except TimeoutError:
            continue
    return events


def drain(ws: ClientConnection, seconds: float) -> list[Event]:
    """Whatever else arrives within ``seconds``."""
    events = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            events.append(json.loads(ws.recv(timeout=left)))
        except TimeoutError:
            break
    return events


def terminal_ids(events: list[Event]) -> set[str]:
    return {e["data"]["task_id"] for e in events if e["status"] in ("success", "failed")}


@contextmanager
def running(pg_store: str, tmp_path: Path, port: int) -> Iterator[tuple[dict[str, str], str]]:
    """Workers and the service up, events flowing: a probe task's event came through."""
    p.require_redis()
    env = p.environment(pg_store, tmp_path / "metrics")
    with p.worker(env), p.service(env, port):
        ws_url = f"ws://127.0.0.1:{port}{EVENTS}"
        with connect(ws_url) as ws:
            p.send(env, 1, 0)
            receive_until(ws, lambda events: bool(terminal_ids(events)))
        yield env, ws_url


def test_a_failing_task_streams_running_then_failed_with_its_error(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    with running(pg_store, tmp_path, unused_port()) as (env, ws_url), connect(ws_url) as ws:
        p.send(env, 1, 1)  # fail(0) raises RuntimeError("failure 0")
        events = receive_until(ws, lambda got: any(e["status"] == "failed" for e in got))
        (failed_id,) = finished_ids(pg_store, "w:fail")
    mine = [e for e in events if e["data"]["task_id"] == failed_id]
    statuses = [e["status"] for e in mine]
    assert statuses[-2:] == ["running", "failed"]
    assert set(statuses) <= {"pending", "running", "failed"}
    failed = mine[-1]
    assert failed["type"] == "task_event"
    assert failed["task_name"] == "w:fail"
    assert failed["data"]["attempt"] == 1
    assert failed["data"]["error_message"] == "RuntimeError: failure 0"
    assert failed["data"]["duration_ms"] is not None
    assert mine[-2]["data"]["error_message"] is None


def test_filters_deliver_only_matching_events(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    with (
        running(pg_store, tmp_path, unused_port()) as (env, ws_url),
        connect(ws_url) as everything,
        connect(f"{ws_url}?{urlencode({'task_name': 'w:fail', 'status': 'failed'})}") as failed,
        connect(f"{ws_url}?status=success") as successes,
        connect(f"{ws_url}?task_name=w:quick") as quick,
    ):
        before = finished_ids(pg_store)
        p.send(env, 6, 2)
        all_events = receive_until(everything, lambda got: len(terminal_ids(got)) == 6)
        sent = terminal_ids(all_events)
        assert not sent & before
        got_failed = receive_until(failed, lambda got: len(got) == 2)
        got_success = receive_until(successes, lambda got: len(got) == 4)
        got_quick = receive_until(quick, lambda got: len(terminal_ids(got)) == 4)
        # Nothing else trickles in after them.
        got_failed += drain(failed, 1.0)
        got_success += drain(successes, 0.2)
        got_quick += drain(quick, 0.2)
    assert {(e["task_name"], e["status"]) for e in got_failed} == {("w:fail", "failed")}
    assert len(got_failed) == 2
    assert all("failure" in e["data"]["error_message"] for e in got_failed)
    assert {(e["task_name"], e["status"]) for e in got_success} == {("w:quick", "success")}
    assert len(got_success) == 4
    assert {e["task_name"] for e in got_quick} == {"w:quick"}
    assert {e["status"] for e in got_quick} >= {"running", "success"}
    assert terminal_ids(got_failed) | terminal_ids(got_success) == sent


def test_a_client_that_reconnects_with_since_gets_what_it_missed(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    with running(pg_store, tmp_path, unused_port()) as (env, ws_url):
        with connect(ws_url) as ws:
            p.send(env, 3, 0)
            seen = receive_until(ws, lambda got: len(terminal_ids(got)) == 3)
            last = seen[-1]["data"]["updated_at"]
        # Disconnected: these finish unseen.
        before = finished_ids(pg_store)
        p.send(env, 5, 2)
        wait_for(lambda: len(finished_ids(pg_store) - before) == 5, "the missed tasks finish", 60)
        missed = finished_ids(pg_store) - before
        with connect(f"{ws_url}?{urlencode({'since': last})}") as ws:
            replayed = receive_until(ws, lambda got: missed <= terminal_ids(got))
            # Then live events follow on the same connection.
            p.send(env, 1, 0)
            live = receive_until(ws, lambda got: bool(terminal_ids(got) - missed - before))
    by_id = {e["data"]["task_id"]: e for e in replayed if e["data"]["task_id"] in missed}
    assert {e["status"] for e in by_id.values()} == {"success", "failed"}
    assert sorted(e["task_name"] for e in by_id.values()) == ["w:fail"] * 2 + ["w:quick"] * 3
    for e in by_id.values():
        assert stamp(e) >= datetime.fromisoformat(last)
        if e["status"] == "failed":
            assert "failure" in e["data"]["error_message"]
    # Oldest change first. Rows seen before may come again (inclusive, and a client's
    # late PENDING write re-stamps a finished row), never rows from before `since`.
    stamps = [stamp(e) for e in replayed]
    assert stamps == sorted(stamps)
    assert terminal_ids(replayed) <= missed | terminal_ids(seen)
    assert terminal_ids(live)


def stamp(event: Event) -> datetime:
    return datetime.fromisoformat(event["data"]["updated_at"])
