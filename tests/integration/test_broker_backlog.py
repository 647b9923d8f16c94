"""The broker's backlog on /metrics (serve --broker), read from the real servers of
this machine: a burst sent with the middleware and left waiting (no worker), the
exported count and age checked against it, then some consumed by hand (NATS: in
test_broker_backlog_nats.py; real workers: test_broker_backlog_workers.py). A
broker that cannot be inspected says so once; one that does not answer costs a
scrape no more than its budget."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from taskiq import AsyncBroker, InMemoryBroker

from exporter import MonitoringMiddleware
from exporter.cli import main
from exporter.metrics.names import (
    QUEUE_CONSUMERS,
    QUEUE_IN_FLIGHT,
    QUEUE_INSPECTION_SUPPORTED,
    QUEUE_INSPECTION_UP,
    QUEUE_MESSAGES,
    QUEUE_OLDEST_AGE,
)
from tests.helpers.backlog import (
    FRESH,
    N,
    check_age,
    check_later_age,
    parsed,
    require,
    scraping,
    send_burst,
    unique,
)
from tests.helpers.brokers import AMQP_URL, REDIS_URL
from tests.helpers.middleware import FAST
from tests.helpers.serving import running_service

pytestmark = pytest.mark.integration

# Imported by its import string, as `serve --broker` does.
UNSUPPORTED = InMemoryBroker()


async def test_a_redis_list_reports_its_length_and_the_oldest_messages_age(
    sqlite_store: str,
) -> None:
    from taskiq_redis import ListQueueBroker

    require("127.0.0.1", 6379, "Redis")
    queue = unique("list")
    sender = ListQueueBroker(REDIS_URL, queue_name=queue).with_middlewares(
        MonitoringMiddleware(database_url=sqlite_store, **FAST)
    )
    redis = Redis.from_url(REDIS_URL)
    await sender.startup()
    try:
        sent_from = await send_burst(sender)
        inspected = ListQueueBroker(REDIS_URL, queue_name=queue)
        async with scraping(sqlite_store, inspected, **FRESH) as scrape:
            first = await scrape()
            assert first[QUEUE_MESSAGES, queue] == N
            check_age(first[QUEUE_OLDEST_AGE, queue], sent_from)
            assert first[QUEUE_INSPECTION_UP, ""] == 1
            assert first[QUEUE_INSPECTION_SUPPORTED, "ListQueueBroker"] == 1
            assert (QUEUE_IN_FLIGHT, queue) not in first  # a list does not know
            assert await redis.llen(queue) == N  # read in place: nothing was taken
            for _ in range(3):  # as a worker does: from the tail
                assert await redis.rpop(queue) is not None
            after = await scrape()
            assert after[QUEUE_MESSAGES, queue] == N - 3
            check_later_age(after[QUEUE_OLDEST_AGE, queue], sent_from)  # the fourth is the oldest
            await redis.delete(queue)
            drained = await scrape()
            assert drained[QUEUE_MESSAGES, queue] == 0
            assert drained[QUEUE_OLDEST_AGE, queue] == 0
    finally:
        await redis.delete(queue)
        await redis.aclose()
        await sender.shutdown()


async def test_a_redis_stream_reports_the_groups_lag_pending_and_age(sqlite_store: str) -> None:
    from taskiq_redis import RedisStreamBroker

    require("127.0.0.1", 6379, "Redis")
    queue, group = unique("stream"), "workers"
    sender = RedisStreamBroker(
        REDIS_URL, queue_name=queue, consumer_group_name=group
    ).with_middlewares(MonitoringMiddleware(database_url=sqlite_store, **FAST))
    redis = Redis.from_url(REDIS_URL)
    await sender.startup()  # declares the group, as every process of the broker does
    try:
        sent_from = await send_burst(sender)
        never = unique("never")  # read too, though nothing was ever sent to it
        inspected = RedisStreamBroker(
            REDIS_URL,
            queue_name=queue,
            consumer_group_name=group,
            additional_streams={never: ">"},
        )
        async with scraping(sqlite_store, inspected, **FRESH) as scrape:
            first = await scrape()
            assert first[QUEUE_MESSAGES, queue] == N
            assert first[QUEUE_MESSAGES, never] == first[QUEUE_IN_FLIGHT, never] == 0
            assert first[QUEUE_IN_FLIGHT, queue] == 0
            check_age(first[QUEUE_OLDEST_AGE, queue], sent_from)
            # A worker takes three and acknowledges one of them.
            taken = await redis.xreadgroup(group, "w1", {queue: ">"}, count=3)
            ids = [entry_id for entry_id, _ in taken[0][1]]
            await redis.xack(queue, group, ids[0])
            after = await scrape()
            assert after[QUEUE_MESSAGES, queue] == N - 3
            assert after[QUEUE_IN_FLIGHT, queue] == 2
            # The oldest waiting is now the fourth, sent after the pause.
            check_later_age(after[QUEUE_OLDEST_AGE, queue], sent_from)
    finally:
        await redis.delete(queue)
        await redis.aclose()
        await sender.shutdown()


async def test_rabbitmq_reports_ready_messages_and_consumers(sqlite_store: str) -> None:
    pytest.importorskip("taskiq_aio_pika")
    import aio_pika
    from taskiq_aio_pika import AioPikaBroker, Queue

    require("127.0.0.1", 5672, "RabbitMQ")
    queue = unique("amqp")
    sender = AioPikaBroker(AMQP_URL, task_queues=[Queue(name=queue)]).with_middlewares(
        MonitoringMiddleware(database_url=sqlite_store, **FAST)
    )
    await sender.startup()  # declares the queue and binds it, as a worker would
    connection = await aio_pika.connect(AMQP_URL)
    try:
        await send_burst(sender)
        inspected = AioPikaBroker(AMQP_URL, task_queues=[Queue(name=queue)])
        async with scraping(sqlite_store, inspected, **FRESH) as scrape:
            first = await scrape()
            assert first[QUEUE_MESSAGES, queue] == N
            assert first[QUEUE_CONSUMERS, queue] == 0
            assert (QUEUE_OLDEST_AGE, queue) not in first  # AMQP does not tell
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            for taken in range(1, N + 1):
                message = await declared.get(timeout=5)
                await message.ack()
                if taken == 3:
                    assert (await scrape())[QUEUE_MESSAGES, queue] == N - 3
            # A consumer on the drained queue (on a queue with messages it would take
            # them all: a consumer is counted, what it holds is not "ready").
            consumer = await declared.consume(ignore)
            after = await scrape()
            assert after[QUEUE_CONSUMERS, queue] == 1
            assert after[QUEUE_MESSAGES, queue] == 0
            await declared.cancel(consumer)
    finally:
        cleanup = await connection.channel()
        await cleanup.queue_delete(queue)
        await connection.close()
        await sender.shutdown()


async def ignore(message: Any) -> None:
    return None


async def test_a_broker_that_cannot_be_inspected_says_so_once(
    sqlite_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    spec = f"{__name__}:UNSUPPORTED"
    with caplog.at_level(logging.WARNING, logger="exporter.brokers.backlog"):
        async with running_service(sqlite_store, broker=spec, **FRESH) as (_, client):
            for _ in range(3):
                scraped = parsed(await client.get("/metrics"))
                assert scraped == {(QUEUE_INSPECTION_SUPPORTED, "InMemoryBroker"): 0}
    said = [r for r in caplog.records if "cannot be inspected" in r.getMessage()]
    assert len(said) == 1


def silent_redis(port: int) -> AsyncBroker:
    from taskiq_redis import ListQueueBroker

    return ListQueueBroker(f"redis://127.0.0.1:{port}", queue_name="q")


def silent_rabbitmq(port: int) -> AsyncBroker:
    aio_pika = pytest.importorskip("taskiq_aio_pika")
    broker: AsyncBroker = aio_pika.AioPikaBroker(
        f"amqp://guest:guest@127.0.0.1:{port}/", task_queues=[aio_pika.Queue(name="q")]
    )
    return broker


def silent_nats(port: int) -> AsyncBroker:
    from taskiq_nats import PullBasedJetStreamBroker

    return PullBasedJetStreamBroker(f"nats://127.0.0.1:{port}", stream_name="q")


@pytest.mark.parametrize("make", [silent_redis, silent_rabbitmq, silent_nats])
async def test_a_broker_that_does_not_answer_costs_a_scrape_its_budget_only(
    sqlite_store: str, caplog: pytest.LogCaptureFixture, make: Callable[[int], AsyncBroker]
) -> None:
    budget, timeout = 0.2, 1.0
    bounds = {
        "broker_inspect_budget_seconds": budget,
        "broker_inspect_timeout_seconds": timeout,
        **FRESH,
    }
    # Accepted by the kernel, never answered: every command waits.
    with socket.socket() as silent, caplog.at_level(logging.WARNING):
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        async with scraping(sqlite_store, make(port), **bounds) as scrape:
            for _ in range(3):
                started = time.monotonic()
                scraped = await scrape()
                assert time.monotonic() - started < budget + 0.3  # < timeout
                assert scraped[QUEUE_INSPECTION_UP, ""] == 0
                assert (QUEUE_MESSAGES, "q") not in scraped
            await asyncio.sleep(timeout + 0.1)  # the first inspection has timed out
            assert (await scrape())[QUEUE_INSPECTION_UP, ""] == 0
    failed = [r for r in caplog.records if "inspecting the broker" in r.getMessage()]
    assert len(failed) == 1  # when it started failing, not at every scrape


async def test_a_closed_port_fails_fast_and_the_cache_spares_the_broker(
    sqlite_store: str, unused_port: Callable[[], int]
) -> None:
    from taskiq_redis import ListQueueBroker

    broker = ListQueueBroker(f"redis://127.0.0.1:{unused_port()}", queue_name="q")
    async with scraping(sqlite_store, broker, broker_inspect_cache_seconds=60) as scrape:
        started = time.monotonic()
        assert (await scrape())[QUEUE_INSPECTION_UP, ""] == 0
        assert time.monotonic() - started < 0.5
    require("127.0.0.1", 6379, "Redis")
    queue = unique("cached")
    redis = Redis.from_url(REDIS_URL)
    try:
        await redis.lpush(queue, b"{}")
        inspected = ListQueueBroker(REDIS_URL, queue_name=queue)
        async with scraping(sqlite_store, inspected, broker_inspect_cache_seconds=60) as scrape:
            assert (await scrape())[QUEUE_MESSAGES, queue] == 1
            await redis.lpush(queue, b"{}")
            cached = await scrape()  # within the cache's lifetime: not read again
            assert cached[QUEUE_MESSAGES, queue] == 1
            assert (QUEUE_OLDEST_AGE, queue) not in cached  # sent without the middleware
    finally:
        await redis.delete(queue)
        await redis.aclose()


def test_serve_refuses_a_broker_it_cannot_import(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKIQ_EXPORTER_BROKER", raising=False)
    assert main(["serve", "--broker", "texp_no_such_module:broker"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("taskiq-exporter serve: invalid --broker: cannot import ")
    assert "texp_no_such_module" in err
    assert main(["serve", "--broker", f"{__name__}:N"]) == 2
    assert "is not a taskiq broker (int)" in capsys.readouterr().err
