"""The broker's backlog on /metrics against real ``taskiq worker`` processes, for
every broker the service inspects: a burst sent before any worker runs, the exported
count and age checked against what the broker itself says, then workers started on
a slow task (taken, not yet acknowledged: in flight where the broker tells it) and
left to drain it, until the backlog is 0 on /metrics and in the broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from taskiq import AsyncBroker

from exporter import MonitoringMiddleware
from exporter.metrics.names import QUEUE_IN_FLIGHT, QUEUE_MESSAGES, QUEUE_OLDEST_AGE
from tests.helpers.backlog import Scraped, require, scraping, unique
from tests.helpers.brokers import AMQP_URL, KINDS, NATS_URL, REDIS_URL, make_broker
from tests.helpers.middleware import FAST
from tests.helpers.processes import environment, worker

pytestmark = pytest.mark.integration

N = 20
WAITED = 0.5
TASK_SECONDS = 1.0
DRAIN_SECONDS = 90.0
FRESH = {"broker_inspect_cache_seconds": 0.0}
PORTS = {"list": 6379, "stream": 6379, "amqp": 5672, "nats": 4222}
# Where the broker tells it: a list and AMQP know no in-flight count.
KNOWS_IN_FLIGHT = {"stream", "nats"}

# What the broker holds, read with its own client: (waiting, in flight or None).
Reader = Callable[[], Awaitable[tuple[int, int | None]]]


@contextlib.asynccontextmanager
async def broker_reader(kind: str, queue: str) -> AsyncIterator[Reader]:
    """A reader of the queue's state straight from the broker; removes the queue after."""
    if kind in ("list", "stream"):
        from redis.asyncio import Redis

        redis = Redis.from_url(REDIS_URL)

        async def read_redis() -> tuple[int, int | None]:
            if kind == "list":
                return int(await redis.llen(queue)), None
            groups = await redis.xinfo_groups(queue)
            group = next(g for g in groups if g["name"] == b"workers")
            return int(group["lag"]), int(group["pending"])

        try:
            yield read_redis
        finally:
            await redis.delete(queue)
            await redis.aclose()
    elif kind == "amqp":
        import aio_pika

        connection = await aio_pika.connect(AMQP_URL)

        async def read_amqp() -> tuple[int, int | None]:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            count = declared.declaration_result.message_count
            await channel.close()
            return int(count or 0), None

        try:
            yield read_amqp
        finally:
            cleanup = await connection.channel()
            await cleanup.queue_delete(queue)
            await connection.close()
    else:
        import nats

        client = await nats.connect(NATS_URL)
        js = client.jetstream()

        async def read_nats() -> tuple[int, int | None]:
            info = await js.consumer_info(queue, "workers")
            return info.num_pending or 0, info.num_ack_pending

        try:
            yield read_nats
        finally:
            with contextlib.suppress(Exception):
                await js.delete_stream(queue)
            await client.close()


async def send_burst(sender: AsyncBroker) -> float:
    """N tasks, none taken yet: one, then the rest WAITED seconds later. Returns when
    the first was sent."""

    @sender.task(task_name="backlog:work")  # the worker app's task, by name
    async def work() -> None:
        return None

    await sender.startup()  # declares what the workers read, as every process does
    try:
        started = time.time()
        await work.kiq()
        await asyncio.sleep(WAITED)
        for _ in range(N - 1):
            await work.kiq()
    finally:
        await sender.shutdown()
    return started


async def until(
    scrape: Callable[[], Awaitable[Scraped]], done: Callable[[Scraped], bool]
) -> list[Scraped]:
    """Scrapes until ``done`` (all of them returned), failing after DRAIN_SECONDS."""
    seen: list[Scraped] = []
    deadline = time.monotonic() + DRAIN_SECONDS
    while not seen or not done(seen[-1]):
        assert time.monotonic() < deadline, f"not drained: {seen[-1]}"
        await asyncio.sleep(0.1)
        seen.append(await scrape())
    return seen


@pytest.mark.parametrize("kind", KINDS)
async def test_real_workers_drain_the_backlog_the_service_reports(
    sqlite_store: str, tmp_path: Path, kind: str
) -> None:
    if kind == "amqp":
        pytest.importorskip("taskiq_aio_pika")
    if kind == "nats":
        pytest.importorskip("taskiq_nats")
    require("127.0.0.1", PORTS[kind], kind)
    queue = unique(kind)
    sender = make_broker(kind, queue).with_middlewares(
        MonitoringMiddleware(database_url=sqlite_store, **FAST)
    )
    async with (
        broker_reader(kind, queue) as read,
        scraping(sqlite_store, make_broker(kind, queue), **FRESH) as scrape,
    ):
        sent_from = await send_burst(sender)
        waiting = await scrape()
        held, in_flight = await read()
        assert held == N  # nothing was taken by reading it
        assert waiting[QUEUE_MESSAGES, queue] == held
        if kind == "amqp":
            assert (QUEUE_OLDEST_AGE, queue) not in waiting  # AMQP does not tell
        else:
            assert WAITED <= waiting[QUEUE_OLDEST_AGE, queue] <= time.time() - sent_from
        if kind in KNOWS_IN_FLIGHT:
            assert waiting[QUEUE_IN_FLIGHT, queue] == in_flight == 0

        env = environment(
            sqlite_store,
            tmp_path / "metrics",
            TEST_BROKER=kind,
            TEST_QUEUE=queue,
            TEST_TASK_SECONDS=str(TASK_SECONDS),
        )
        (tmp_path / "metrics").mkdir()
        with worker(env, workers=1, app="tests.helpers.backlog_app:broker"):

            def drained(s: Scraped) -> bool:
                return s[QUEUE_MESSAGES, queue] == 0 and s.get((QUEUE_IN_FLIGHT, queue), 0) == 0

            seen = await until(scrape, drained)
            assert await read() == (0, 0 if kind in KNOWS_IN_FLIGHT else None)
            assert seen[-1][QUEUE_OLDEST_AGE, queue] == 0
            if kind in KNOWS_IN_FLIGHT:
                # The worker held tasks while the slow task ran: taken, not acknowledged.
                assert max(s[QUEUE_IN_FLIGHT, queue] for s in seen) > 0
        # Stopped (a clean shutdown finishes what it holds): nothing comes back, so
        # every task was acknowledged, not merely taken.
        assert await read() == (0, 0 if kind in KNOWS_IN_FLIGHT else None)
        assert (await scrape())[QUEUE_MESSAGES, queue] == 0
