"""EventHub: filters applied as events are published, bounded queues that say where
to resume after an overflow, a fan-out and senders that give the loop back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from datetime import UTC, datetime, timedelta

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.events import (
    FANOUT_SLICE,
    Dropped,
    EventHub,
    Subscription,
    TaskEvent,
    Turns,
    encode,
)
from exporter.service.events_ws import event_families, replay_horizon
from exporter.settings import ExporterSettings

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def event(i: int, *, task_name: str = "app:job", status: str = "success") -> TaskEvent:
    stamp = (BASE + timedelta(milliseconds=i)).isoformat()
    return TaskEvent(task_name, status, stamp, f"t{i}", 1, 1.0, None, stamp)


async def next_event(sub: Subscription) -> TaskEvent:
    item = await sub.get()
    assert not isinstance(item, Dropped)
    return item[0]


async def test_publish_returns_at_once_and_filters_before_queueing() -> None:
    hub = EventHub()
    with (
        hub.subscribe() as everything,
        hub.subscribe(task_name="app:job", status="failed") as failed_jobs,
        hub.subscribe(status="running") as running,
    ):
        events = [
            event(0, status="running"),
            event(1, status="failed"),
            event(2, status="failed", task_name="other"),
            event(3),
        ]
        hub.publish(events)
        assert len(everything) == 0  # handed to the fan-out task, not delivered inline
        await hub.idle()
        assert len(everything) == 4
        assert len(failed_jobs) == 1  # nothing it does not want was ever queued
        assert len(running) == 1
        first = await failed_jobs.get()
        assert not isinstance(first, Dropped)
        assert first == (events[1], encode(events[1]))
        assert await next_event(running) is events[0]


async def test_the_fan_out_gives_the_loop_back_after_every_chunk() -> None:
    chunk = 1_000
    hub = EventHub(chunk=chunk)
    delivered: list[int] = []  # events queued in all, each time the ticker ran
    with contextlib.ExitStack() as stack:
        subs = [stack.enter_context(hub.subscribe(client=f"c{i}")) for i in range(50)]

        async def ticker() -> None:
            while True:
                delivered.append(sum(len(s) for s in subs))
                await asyncio.sleep(0)

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        hub.publish([event(i) for i in range(2_000)])
        await hub.idle()
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
        total = sum(len(s) for s in subs)
    assert total == 50 * 2_000
    steps = [b - a for a, b in itertools.pairwise(delivered)]
    # Between two runs of the ticker the fan-out offered at most one chunk, plus
    # the one subscriber's slice that crossed the line.
    assert max(steps) <= chunk + FANOUT_SLICE
    assert len([s for s in steps if s]) >= total // (chunk + FANOUT_SLICE)


async def test_a_full_queue_keeps_its_events_then_says_where_to_resume() -> None:
    hub = EventHub(queue_size=3)
    with hub.subscribe() as sub:
        hub.publish([event(i) for i in range(10)])
        await hub.idle()
        assert [(await next_event(sub)).task_id for _ in range(3)] == ["t0", "t1", "t2"]
        marker = await sub.get()
        assert isinstance(marker, Dropped)
        assert marker.count == 7
        assert marker.resume_from == datetime.fromisoformat(event(3).updated_at)
        assert marker.to_message() == {
            "type": "events_dropped",
            "resume_from": event(3).updated_at,
            "dropped": 7,
        }
        # Past the marker, live events queue again.
        hub.publish([event(20)])
        await hub.idle()
        assert (await next_event(sub)).task_id == "t20"
    assert hub.stats.dropped == 7


async def test_an_overflow_resumes_from_the_oldest_event_it_dropped() -> None:
    # Writers' clocks and commits do not arrive in updated_at order.
    hub = EventHub(queue_size=1)
    with hub.subscribe() as sub:
        hub.publish([event(5), event(9), event(2), event(7)])
        await hub.idle()
        await sub.get()
        marker = await sub.get()
    assert isinstance(marker, Dropped)
    assert (marker.count, marker.resume_from) == (3, datetime.fromisoformat(event(2).updated_at))


async def test_a_gap_in_the_listener_reaches_every_subscriber_in_order() -> None:
    hub = EventHub()
    with hub.subscribe() as a, hub.subscribe(task_name="other") as b:
        hub.publish([event(0)])
        hub.gap(BASE)
        await hub.idle()
        assert (await next_event(a)).task_id == "t0"
        for sub in (a, b):
            marker = await sub.get()
            assert isinstance(marker, Dropped)
            assert marker.resume_from == BASE


def test_publish_outside_a_loop_delivers_at_once() -> None:
    hub = EventHub()
    with hub.subscribe() as sub:
        hub.publish([event(0), event(1)])
        assert len(sub) == 2


async def test_connections_are_counted_per_client() -> None:
    hub = EventHub()
    with hub.subscribe(client="10.0.0.1"), hub.subscribe(client="10.0.0.1"):
        with hub.subscribe(client="10.0.0.2"):
            assert (hub.subscribers, hub.connections("10.0.0.1")) == (3, 2)
        assert hub.connections("10.0.0.2") == 0
    assert (hub.subscribers, hub.connections("10.0.0.1")) == (0, 0)


async def test_turns_bound_the_work_between_two_runs_of_the_loop() -> None:
    turns = Turns(budget=8)
    sent = 0
    seen: list[int] = []

    async def stream() -> None:
        nonlocal sent
        credit = 0
        for _ in range(50):
            if not credit:
                credit = await turns.take(3)
            credit -= 1
            sent += 1  # a send that does not wait, as most do

    async def ticker() -> None:
        while True:
            seen.append(sent)
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await asyncio.gather(*(stream() for _ in range(20)))
    tick.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tick
    assert sent == 20 * 50
    assert turns.granted >= sent  # a stream may not spend all of its last share
    steps = [b - a for a, b in itertools.pairwise(seen)]
    assert max(steps) <= 2 * turns.budget  # grants of one turn, spent across two
    assert len(seen) >= sent // (2 * turns.budget)


async def test_a_cancelled_taker_loses_its_place_in_line() -> None:
    turns = Turns(budget=1)
    first, cancelled, last = (asyncio.create_task(turns.take(1)) for _ in range(3))
    await asyncio.sleep(0)  # the three asked within one turn: the first got it
    assert first.done()
    assert not last.done()
    cancelled.cancel()
    assert await last == 1


def test_families_count_refusals_drops_and_truncated_replays() -> None:
    hub = EventHub()
    hub.stats.refused["max_connections"] = 2
    hub.stats.dropped = 7
    hub.stats.replays_truncated = 1

    class Events(Collector):
        def collect(self) -> list[Metric]:
            return event_families(hub)

    registry = CollectorRegistry()
    registry.register(Events())
    value = registry.get_sample_value
    assert value("taskiq_exporter_events_connections") == 0
    assert value("taskiq_exporter_events_connections_refused_total", {"reason": "max_connections"})
    assert (
        value(
            "taskiq_exporter_events_connections_refused_total",
            {"reason": "max_connections_per_client"},
        )
        == 0
    )
    assert value("taskiq_exporter_events_dropped_total") == 7
    assert value("taskiq_exporter_events_replays_truncated_total") == 1


def test_the_replay_horizon_is_the_shorter_of_max_age_and_retention() -> None:
    now = BASE
    settings = ExporterSettings(events_max_replay_age_seconds=3_600, retention_days=30)
    assert replay_horizon(settings, now) == now - timedelta(hours=1)
    settings = ExporterSettings(events_max_replay_age_seconds=10 * 86_400, retention_days=2)
    assert replay_horizon(settings, now) == now - timedelta(days=2)
