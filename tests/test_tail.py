"""`taskiq-exporter tail`: its lines, its URL, its errors, and resuming after a
reconnect against a real service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from exporter.cli.options import CliError
from exporter.cli.tail import Cursor, events_url, follow, format_event
from exporter.events import EventHub, TaskEvent
from tests.helpers.rows import insert_logs, stored_row
from tests.helpers.serving import running_service, serving


def test_a_line_shows_the_event_and_escapes_control_characters() -> None:
    event = {
        "type": "task_event",
        "task_name": "app:send\x1b[2J",
        "status": "failed",
        "timestamp": "2026-11-28T12:00:01.123456+00:00",
        "data": {"task_id": "abc", "attempt": 2, "duration_ms": 12.345,
                 "error_message": "ValueError: bad\nline\x07"},
    }  # fmt: skip
    line = format_event(event, colour=False)
    assert line.startswith("12:00:01.123  failed")
    assert "abc#2" in line
    assert "12.3 ms" in line
    assert "\x1b" not in line
    assert "\n" not in line
    assert "\\x1b[2J" in line
    assert "ValueError: bad\\nline\\x07" in line
    coloured = format_event(event, colour=True)
    assert coloured.startswith("\033[31m")
    assert coloured.endswith("\033[0m")


def task_event(task_id: str, updated_at: str, status: str = "success") -> dict[str, Any]:
    return {"type": "task_event", "task_name": "app:job", "status": status,
            "data": {"task_id": task_id, "attempt": 1, "updated_at": updated_at}}  # fmt: skip


def test_the_cursor_skips_what_a_replay_sends_again_and_keeps_late_events() -> None:
    cursor = Cursor()
    assert cursor.since is None
    assert cursor.is_new(task_event("a", "2026-11-28T12:00:01+00:00"))
    assert cursor.is_new(task_event("b", "2026-11-28T12:00:02+00:00", "running"))
    assert cursor.is_new(task_event("b", "2026-11-28T12:00:02+00:00"))  # same batch
    assert cursor.since == "2026-11-28T12:00:02+00:00"
    # The replay after a reconnect starts at the cursor, inclusive.
    assert not cursor.is_new(task_event("b", "2026-11-28T12:00:02+00:00", "running"))
    assert not cursor.is_new(task_event("b", "2026-11-28T12:00:02+00:00"))
    assert cursor.is_new(task_event("c", "2026-11-28T12:00:02+00:00"))
    assert cursor.is_new(task_event("d", "2026-11-28T12:00:03+00:00"))
    # A live event stamped before the cursor (another writer's batch) still shows.
    assert cursor.is_new(task_event("e", "2026-11-28T12:00:02.5+00:00"))
    assert cursor.since == "2026-11-28T12:00:03+00:00"


def test_the_url_may_be_http_or_ws() -> None:
    path = "/api/v1/monitoring/events"
    assert events_url("http://host:8000/") == f"ws://host:8000{path}"
    assert events_url("https://host") == f"wss://host{path}"
    assert events_url("ws://host") == f"ws://host{path}"
    assert events_url("host:8000") == f"ws://host:8000{path}"
    since = "2026-11-28T12:00:02+00:00"
    assert events_url("http://h", status="failed", task_name=None, since=since) == (
        f"ws://h{path}?status=failed&since=2026-11-28T12%3A00%3A02%2B00%3A00"
    )
    with pytest.raises(CliError) as bad:
        events_url("ftp://host")
    assert bad.value.code == 2


async def first_event(url: str, **options: Any) -> dict[str, Any]:
    async for event in follow(url, **options):
        return event
    raise AssertionError("the stream ended")


async def test_a_refused_token_and_a_bad_filter_are_one_line_each(
    sqlite_store: str, unused_port: Callable[[], int]
) -> None:
    async with (
        running_service(sqlite_store, api_token="right") as (app, _client),
        serving(app, unused_port()) as host,
    ):
        with pytest.raises(CliError) as refused:
            await first_event(f"http://{host}", token="wrong")
        assert str(refused.value) == (
            "the service refused the token: set --token or TASKIQ_EXPORTER_API_TOKEN"
        )
        with pytest.raises(CliError) as bad:
            await first_event(f"http://{host}", token="right", status="bogus")
        assert str(bad.value) == (
            "the service refused the request: invalid query parameter 'status': must be one"
            " of pending, running, success, failed (events with that status only) (got 'bogus')"
        )


def event_of(row: dict[str, Any]) -> TaskEvent:
    """The live event the writer publishes for a finished row."""
    return TaskEvent(
        task_name=row["task_name"],
        status=row["status"],
        timestamp=row["completed_at"].isoformat(),
        task_id=row["task_id"],
        attempt=row["attempt"],
        duration_ms=row["duration_ms"],
        error_message=None,
        updated_at=row["updated_at"].isoformat(),
    )


def tail_into(seen: list[str], port: int) -> Callable[[], Awaitable[None]]:
    """A tail of the service on ``port`` that appends each event's task id to ``seen``."""

    async def tail() -> None:
        async for event in follow(f"http://127.0.0.1:{port}", backoff=(0.05, 0.2)):
            seen.append(event["data"]["task_id"])

    return tail


def shown(seen: list[str], *, distinct: bool = False) -> Callable[[int], Awaitable[None]]:
    async def until(count: int) -> None:
        while len(set(seen) if distinct else seen) < count:
            await asyncio.sleep(0.01)

    return until


def subscribed_to(hub: EventHub) -> Callable[[], Awaitable[None]]:
    async def subscribed() -> None:
        while hub.subscribers < 1:
            await asyncio.sleep(0.01)

    return subscribed


async def test_tail_resumes_after_a_restart_and_shows_every_event_once(
    sqlite_store: str, unused_port: Callable[[], int], capsys: pytest.CaptureFixture[str]
) -> None:
    hub = EventHub()
    port = unused_port()
    base = datetime.now(UTC)
    rows = [stored_row(task_id=f"t{i}", created_at=base + timedelta(seconds=i)) for i in range(7)]
    seen: list[str] = []

    tail = tail_into(seen, port)
    until, subscribed = shown(seen), subscribed_to(hub)

    async with running_service(sqlite_store, hub=hub) as (app, _client):
        async with serving(app, port):
            consumer = asyncio.create_task(tail())
            await asyncio.wait_for(subscribed(), 10)
            await insert_logs(sqlite_store, rows[:3])
            hub.publish([event_of(row) for row in rows[:3]])
            await asyncio.wait_for(until(3), 10)
        # The service is down: these are written meanwhile, and only replayed.
        await insert_logs(sqlite_store, rows[3:6])
        await asyncio.sleep(0.3)  # a few refused reconnects
        async with serving(app, port):
            await asyncio.wait_for(until(6), 10)
            await asyncio.wait_for(subscribed(), 10)
            await insert_logs(sqlite_store, rows[6:])
            hub.publish([event_of(rows[6])])
            await asyncio.wait_for(until(7), 10)
            await asyncio.sleep(0.3)  # time for a duplicate to arrive, if any would
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
    assert seen == [f"t{i}" for i in range(7)]
    assert capsys.readouterr().err.count("reconnecting...") == 1


async def test_tail_pages_through_a_truncated_replay_and_loses_nothing(
    sqlite_store: str, unused_port: Callable[[], int]
) -> None:
    """The service replays two rows at a time: tail reconnects from each
    resume_from until it has shown every row written while it was away."""
    hub = EventHub()
    port = unused_port()
    base = datetime.now(UTC)
    rows = [stored_row(task_id=f"t{i}", created_at=base + timedelta(seconds=i)) for i in range(8)]
    seen: list[str] = []

    tail = tail_into(seen, port)
    until, subscribed = shown(seen, distinct=True), subscribed_to(hub)

    async with running_service(sqlite_store, hub=hub, events_max_replay_rows=2) as (app, _):
        async with serving(app, port):
            consumer = asyncio.create_task(tail())
            await asyncio.wait_for(subscribed(), 10)
            await insert_logs(sqlite_store, rows[:1])
            hub.publish([event_of(rows[0])])
            await asyncio.wait_for(until(1), 10)
        await insert_logs(sqlite_store, rows[1:])  # seven rows: four pages of two
        await asyncio.sleep(0.3)
        async with serving(app, port):
            await asyncio.wait_for(until(8), 20)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
    assert sorted(set(seen)) == [f"t{i}" for i in range(8)]
    assert seen[:1] == ["t0"]
