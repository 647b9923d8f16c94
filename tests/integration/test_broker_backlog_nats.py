"""A taskiq-nats JetStream broker's backlog on /metrics, read from this machine's
NATS server: the workers' durable consumer's pending and ack-pending counts and the
stored time of the first message it has not been given, with both retention
policies, before a worker made the consumer, and for a push broker."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from taskiq import AsyncBroker

from exporter import MonitoringMiddleware
from exporter.metrics.names import (
    QUEUE_IN_FLIGHT,
    QUEUE_INSPECTION_SUPPORTED,
    QUEUE_MESSAGES,
    QUEUE_OLDEST_AGE,
)
from tests.helpers.backlog import (
    FRESH,
    WAITED,
    N,
    check_age,
    check_later_age,
    require,
    scraping,
    send_burst,
    unique,
)
from tests.helpers.brokers import NATS_URL, make_broker
from tests.helpers.middleware import FAST

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("retention", ["limits", "workqueue"])
async def test_nats_jetstream_reports_the_consumers_pending_ack_pending_and_age(
    sqlite_store: str, retention: str
) -> None:
    import nats
    from nats.js.api import RetentionPolicy, StreamConfig
    from taskiq_nats import PullBasedJetStreamBroker

    require("127.0.0.1", 4222, "NATS")
    stream, subject = unique("js"), unique("subject")

    def make() -> AsyncBroker:
        config = StreamConfig(retention=RetentionPolicy(retention))
        return PullBasedJetStreamBroker(
            NATS_URL, subject=subject, stream_name=stream, durable="workers", stream_config=config
        )

    inspected = make()
    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    try:
        async with scraping(sqlite_store, inspected, **FRESH) as scrape:
            assert (await scrape())[QUEUE_MESSAGES, stream] == 0  # no stream yet
            sender = make().with_middlewares(
                MonitoringMiddleware(database_url=sqlite_store, **FAST)
            )
            await sender.startup()  # the stream and the durable consumer, as a worker's
            try:
                sent_from = await send_burst(sender)
            finally:
                await sender.shutdown()
            first = await scrape()
            assert first[QUEUE_MESSAGES, stream] == N
            assert first[QUEUE_IN_FLIGHT, stream] == 0
            check_age(first[QUEUE_OLDEST_AGE, stream], sent_from)
            assert first[QUEUE_INSPECTION_SUPPORTED, "PullBasedJetStreamBroker"] == 1
            # A worker takes three and acknowledges one of them.
            pull = await js.pull_subscribe(subject, durable="workers", stream=stream)
            taken = await pull.fetch(3, timeout=5)
            await taken[0].ack_sync()
            after = await scrape()
            assert after[QUEUE_MESSAGES, stream] == N - 3
            assert after[QUEUE_IN_FLIGHT, stream] == 2
            # The oldest waiting is now the fourth, sent after the pause, whatever the
            # stream keeps of what was taken (Limits keeps all, WorkQueue the unacked).
            check_later_age(after[QUEUE_OLDEST_AGE, stream], sent_from)
            info = await js.consumer_info(stream, "workers")
            assert (info.num_pending, info.num_ack_pending) == (N - 3, 2)  # read, not taken
            kept = (await js.stream_info(stream)).state.messages
            assert kept == (N if retention == "limits" else N - 1)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await client.close()


async def test_nats_counts_the_stream_before_a_worker_made_the_consumer(
    sqlite_store: str,
) -> None:
    import nats
    from nats.js.api import StreamConfig
    from taskiq_nats import PullBasedJetStreamBroker

    require("127.0.0.1", 4222, "NATS")
    stream, subject = unique("js"), unique("subject")
    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    try:
        await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
        sent_from = time.time()
        await js.publish(subject, b"{}")
        await asyncio.sleep(WAITED)
        await js.publish(subject, b"{}")
        inspected = PullBasedJetStreamBroker(NATS_URL, subject=subject, stream_name=stream)
        async with scraping(sqlite_store, inspected, **FRESH) as scrape:
            scraped = await scrape()
            assert scraped[QUEUE_MESSAGES, stream] == 2
            assert scraped[QUEUE_IN_FLIGHT, stream] == 0
            check_age(scraped[QUEUE_OLDEST_AGE, stream], sent_from)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await client.close()


async def test_nats_reads_a_push_brokers_durable_consumer_not_an_ephemeral_one(
    sqlite_store: str,
) -> None:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig
    from taskiq_nats import PushBasedJetStreamBroker

    require("127.0.0.1", 4222, "NATS")
    stream, subject = unique("js"), unique("subject")
    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    try:
        await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
        # taskiq-nats's default push consumer, with nobody bound to it yet.
        durable = ConsumerConfig(durable_name="taskiq_consumer", deliver_subject=unique("to"))
        await js.add_consumer(stream, durable)
        for _ in range(3):
            await js.publish(subject, b"{}")
        inspected = PushBasedJetStreamBroker(NATS_URL, subject=subject, stream_name=stream)
        async with scraping(sqlite_store, inspected, **FRESH) as scrape:
            scraped = await scrape()
            assert scraped[QUEUE_MESSAGES, stream] == 3
            assert scraped[QUEUE_IN_FLIGHT, stream] == 0
            assert scraped[QUEUE_INSPECTION_SUPPORTED, "PushBasedJetStreamBroker"] == 1
        # Each worker its own ephemeral consumer: no single backlog to read.
        ephemeral = PushBasedJetStreamBroker(
            NATS_URL, subject=subject, stream_name=stream, consumer_config=ConsumerConfig()
        )
        async with scraping(sqlite_store, ephemeral, **FRESH) as scrape:
            assert await scrape() == {(QUEUE_INSPECTION_SUPPORTED, "PushBasedJetStreamBroker"): 0}
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await client.close()


async def test_a_nats_sender_with_the_middleware_alone_can_send(sqlite_store: str) -> None:
    """taskiq-nats sends the labels as NATS headers, which take text only: the
    middleware's labels are text."""
    require("127.0.0.1", 4222, "NATS")
    stream = unique("js")
    sender = make_broker("nats", stream).with_middlewares(
        MonitoringMiddleware(database_url=sqlite_store, **FAST)
    )
    await sender.startup()
    try:
        await send_burst(sender)
    finally:
        await sender.shutdown()
        import nats

        client = await nats.connect(NATS_URL)
        with contextlib.suppress(Exception):
            await client.jetstream().delete_stream(stream)
        await client.close()
