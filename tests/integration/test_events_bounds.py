"""The live events' bounds against a real uvicorn: connection limits (close 1013),
the replay horizon (replay_clamped), bounded replays that page (replay_truncated),
slow clients told where to resume (events_dropped), inbound messages (close 1009),
and streams that take turns at the loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from exporter.events import EventHub, TaskEvent
from exporter.service.events_ws import INBOUND_MAX_BYTES
from tests.helpers.rows import insert_logs, stored_row
from tests.helpers.serving import running_service, serving

pytestmark = pytest.mark.integration
PATH = "/api/v1/monitoring/events"


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def close_code(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def subscribed(hub: EventHub, count: int) -> None:
    async with asyncio.timeout(5):
        while hub.subscribers != count:
            await asyncio.sleep(0.01)


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


def rows_at(stamps: list[datetime]) -> list[dict[str, object]]:
    return [
        stored_row(task_id=f"r{i}", created_at=stamp, updated_at=stamp)
        for i, stamp in enumerate(stamps)
    ]


def since(stamp: datetime | str) -> str:
    return quote(stamp if isinstance(stamp, str) else stamp.isoformat())


@pytest.mark.parametrize(
    ("limits", "reason", "counted"),
    [
        ((2, 5), "too many event streams (limit 2); try again later", "max_connections"),
        ((5, 2), "too many event streams from one address (limit 2)", "max_connections_per_client"),
    ],
)
async def test_streams_beyond_a_limit_are_closed_with_try_again_later(
    sqlite_store: str,
    unused_port: Callable[[], int],
    limits: tuple[int, int],
    reason: str,
    counted: str,
) -> None:
    hub = EventHub()
    total, per_client = limits
    async with (
        running_service(
            sqlite_store,
            hub=hub,
            events_max_connections=total,
            events_max_connections_per_client=per_client,
        ) as (app, _client),
        serving(app, unused_port()) as host,
    ):
        url = f"ws://{host}{PATH}"
        async with connect(url):
            async with connect(url):
                await subscribed(hub, 2)
                async with connect(url) as third:  # accepted, then closed with the reason
                    assert await close_code(third) == (1013, reason)
            await subscribed(hub, 1)
            async with connect(url):  # a place freed up
                await subscribed(hub, 2)
    assert hub.stats.refused == {counted: 1}


async def test_the_per_client_limit_leaves_other_addresses_alone(
    sqlite_store: str, unused_port: Callable[[], int]
) -> None:
    hub = EventHub()
    async with (
        running_service(sqlite_store, hub=hub, events_max_connections_per_client=1) as (app, _),
        serving(app, unused_port()) as host,
        connect(f"ws://{host}{PATH}"),
    ):
        await subscribed(hub, 1)
        try:
            other = connect(f"ws://{host}{PATH}", local_addr=("127.0.0.2", 0))
            async with other:
                await subscribed(hub, 2)
        except OSError as exc:  # macOS routes only 127.0.0.1 without an alias
            pytest.skip(f"cannot connect from 127.0.0.2: {exc}")
    assert hub.stats.refused == {}


async def test_a_large_inbound_message_closes_the_stream(
    sqlite_store: str, unused_port: Callable[[], int]
) -> None:
    hub = EventHub()
    async with (
        running_service(sqlite_store, hub=hub) as (app, _client),
        serving(app, unused_port()) as host,
        connect(f"ws://{host}{PATH}") as ws,
    ):
        await subscribed(hub, 1)
        await ws.send("ping" * 10)  # small: ignored
        stamp = datetime.now(UTC).isoformat()
        hub.publish([TaskEvent("app:job", "running", stamp, "t1", 1, None, None, stamp)])
        assert (await recv(ws))["data"]["task_id"] == "t1"
        await ws.send(b"x" * (INBOUND_MAX_BYTES + 1))
        code, reason = await close_code(ws)
    assert code == 1009
    assert str(INBOUND_MAX_BYTES) in reason


async def test_since_before_the_horizon_is_clamped_and_said(
    store_url: str, unused_port: Callable[[], int]
) -> None:
    now = datetime.now(UTC)
    await insert_logs(
        store_url, rows_at([now - timedelta(minutes=10), now - timedelta(seconds=30)])
    )
    asked = now - timedelta(minutes=20)
    async with (
        running_service(store_url, hub=EventHub(), events_max_replay_age_seconds=60) as (app, _),
        serving(app, unused_port()) as host,
        connect(f"ws://{host}{PATH}?since={since(asked)}") as ws,
    ):
        clamped = await recv(ws)
        replayed = await recv(ws)
    assert clamped["type"] == "replay_clamped"
    assert datetime.fromisoformat(clamped["requested"]) == asked
    horizon = datetime.fromisoformat(clamped["since"])
    assert now - timedelta(seconds=61) < horizon < now
    assert replayed["data"]["task_id"] == "r1"  # r0 changed before the horizon


async def test_a_long_replay_stops_between_batches_and_pages_on_with_resume_from(
    store_url: str, unused_port: Callable[[], int]
) -> None:
    base = datetime.now(UTC) - timedelta(minutes=5)
    # r2, r3 and r4 were written in one batch: they share one updated_at.
    stamps = [base + timedelta(seconds=s) for s in (0, 1, 2, 2, 2, 3, 4, 5, 6, 7)]
    await insert_logs(store_url, rows_at(stamps))
    hub = EventHub()
    pages: list[list[str]] = []
    cursors: list[str] = []
    async with (
        running_service(store_url, hub=hub, events_max_replay_rows=3) as (app, _client),
        serving(app, unused_port()) as host,
    ):
        cursor = base.isoformat()
        while True:
            async with connect(f"ws://{host}{PATH}?since={since(cursor)}") as ws:
                await subscribed(hub, 1)
                # A live event marks the end of the replay.
                stamp = datetime.now(UTC).isoformat()
                hub.publish([TaskEvent("app:job", "running", stamp, "live", 1, None, None, stamp)])
                page: list[str] = []
                while (message := await recv(ws))["type"] == "task_event":
                    if message["data"]["task_id"] == "live":
                        break
                    page.append(message["data"]["task_id"])
                pages.append(page)
                if message["type"] != "replay_truncated":
                    break
                cursor = message["resume_from"]
                cursors.append(cursor)
                assert (await recv(ws))["data"]["task_id"] == "live"  # then live
            await subscribed(hub, 0)
    assert pages == [["r0", "r1", "r2", "r3", "r4"], ["r5", "r6", "r7"], ["r8", "r9"]]
    assert cursors == [stamps[5].isoformat(), stamps[8].isoformat()]
    assert hub.stats.replays_truncated == 2


async def test_a_slow_client_is_told_where_to_resume_and_catches_up(
    store_url: str, unused_port: Callable[[], int]
) -> None:
    base = datetime.now(UTC) - timedelta(minutes=5)
    stamps = [base + timedelta(seconds=i) for i in range(30)]
    rows = rows_at(stamps)
    await insert_logs(store_url, rows)
    hub = EventHub()
    async with (
        running_service(store_url, hub=hub, events_queue_size=5) as (app, _client),
        serving(app, unused_port()) as host,
    ):
        async with connect(f"ws://{host}{PATH}") as ws:
            await subscribed(hub, 1)
            # The writer's batch arrives faster than this client's queue takes it.
            hub.publish([event_of(row) for row in rows])
            first = [await recv(ws) for _ in range(5)]
            dropped = await recv(ws)
        assert [m["data"]["task_id"] for m in first] == [f"r{i}" for i in range(5)]
        assert dropped == {
            "type": "events_dropped",
            "resume_from": stamps[5].isoformat(),
            "dropped": 25,
        }
        async with connect(f"ws://{host}{PATH}?since={since(dropped['resume_from'])}") as ws:
            missed = [(await recv(ws))["data"]["task_id"] for _ in range(25)]
    assert missed == [f"r{i}" for i in range(5, 30)]
    assert hub.stats.dropped == 25


async def test_busy_streams_take_turns_and_the_loop_keeps_running(
    sqlite_store: str, unused_port: Callable[[], int]
) -> None:
    hub = EventHub(send_budget=16)
    clients, events = 20, 300
    granted: list[int] = []  # the messages the streams were allowed, each time the ticker ran

    async def ticker() -> None:
        while True:
            granted.append(hub.turns.granted)
            await asyncio.sleep(0)

    async def client(host: str, counts: list[int]) -> None:
        async with connect(f"ws://{host}{PATH}") as ws:
            counts.append(0)
            while counts[-1] < events:
                await recv(ws)
                counts[-1] += 1

    async with (
        running_service(sqlite_store, hub=hub) as (app, _client),
        serving(app, unused_port()) as host,
    ):
        counts: list[list[int]] = [[] for _ in range(clients)]
        readers = [asyncio.create_task(client(host, c)) for c in counts]
        await subscribed(hub, clients)
        tick = asyncio.create_task(ticker())
        stamp = datetime.now(UTC).isoformat()
        hub.publish(
            [TaskEvent("a", "running", stamp, f"t{i}", 1, None, None, stamp) for i in range(events)]
        )
        await asyncio.wait_for(asyncio.gather(*readers), 60)
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
    assert [c[0] for c in counts] == [events] * clients
    assert hub.turns.granted >= clients * events
    # Between two runs of the ticker, all the streams together sent at most what
    # one turn grants (spent across two runs of the loop at most).
    steps = [b - a for a, b in itertools.pairwise(granted)]
    assert max(steps) <= 2 * hub.turns.budget
    assert len(granted) >= clients * events // (2 * hub.turns.budget)
