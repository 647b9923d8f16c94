"""The brokers whose backlog the service reads, built alike for the tests, the
worker app (tests/helpers/backlog_app.py) and the benchmark."""

from __future__ import annotations

import json
import time

from taskiq import AsyncBroker

from exporter.middleware.labels import SENT_AT_LABEL

REDIS_URL = "redis://127.0.0.1:6379"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
NATS_URL = "nats://127.0.0.1:4222"
KINDS = ("list", "stream", "amqp", "nats")


def queue_names(queue: str, queues: int) -> list[str]:
    """The names of a broker's ``queues`` queues: ``queue`` first."""
    return [queue, *(f"{queue}.{i}" for i in range(1, queues))]


def make_broker(kind: str, queue: str, *, queues: int = 1) -> AsyncBroker:
    """The broker of ``kind`` on ``queue`` (the stream's name for NATS), without
    middlewares. A Redis stream or AMQP broker reads ``queues`` queues (see
    queue_names); a Redis list or a NATS stream is one queue per broker."""
    names = queue_names(queue, queues)
    if kind in ("list", "nats") and queues != 1:
        raise ValueError(f"a {kind} broker reads one queue")
    if kind == "list":
        from taskiq_redis import ListQueueBroker

        # redis-py's 5 s default would kill an idle worker's BRPOP.
        return ListQueueBroker(REDIS_URL, queue_name=queue, socket_timeout=None)
    if kind == "stream":
        from taskiq_redis import RedisStreamBroker

        return RedisStreamBroker(
            REDIS_URL,
            queue_name=queue,
            consumer_group_name="workers",
            additional_streams=dict.fromkeys(names[1:], ">"),
        )
    if kind == "amqp":
        from taskiq_aio_pika import AioPikaBroker, Queue

        return AioPikaBroker(AMQP_URL, task_queues=[Queue(name=name) for name in names])
    if kind == "nats":
        from taskiq_nats import PullBasedJetStreamBroker

        return PullBasedJetStreamBroker(
            NATS_URL, subject=f"{queue}.tasks", stream_name=queue, durable="workers"
        )
    raise ValueError(f"unknown broker kind {kind!r}")


async def fill(kind: str, queue: str, *, queues: int, messages: int) -> None:
    """``messages`` waiting in each of the broker's queues, put there with the
    broker's own client as a sender would (declared first, as the broker does); each
    says when it was sent, so the inspection reads every queue's oldest message."""
    broker = make_broker(kind, queue, queues=queues)
    names = queue_names(queue, queues)
    labels = {SENT_AT_LABEL: time.time_ns() // 1000}
    body = json.dumps({"labels": labels}).encode()
    await broker.startup()
    try:
        if kind in ("list", "stream"):
            from redis.asyncio import Redis

            async with Redis.from_url(REDIS_URL) as redis:
                for name in names:
                    for _ in range(messages):
                        if kind == "list":
                            await redis.lpush(name, body)
                        else:
                            await redis.xadd(name, {"data": body})
        elif kind == "amqp":
            import aio_pika

            connection = await aio_pika.connect(AMQP_URL)
            async with connection:
                channel = await connection.channel()
                for name in names:
                    for _ in range(messages):
                        await channel.default_exchange.publish(
                            aio_pika.Message(body), routing_key=name
                        )
        else:
            for _ in range(messages):
                await broker.js.publish(f"{queue}.tasks", body)  # type: ignore[attr-defined]
    finally:
        await broker.shutdown()


async def remove(kind: str, queue: str, *, queues: int) -> None:
    """What fill created."""
    names = queue_names(queue, queues)
    if kind in ("list", "stream"):
        from redis.asyncio import Redis

        async with Redis.from_url(REDIS_URL) as redis:
            await redis.delete(*names)
    elif kind == "amqp":
        import aio_pika

        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            for name in names:
                await channel.queue_delete(name)
    else:
        import nats

        client = await nats.connect(NATS_URL)
        try:
            await client.jetstream().delete_stream(queue)
        finally:
            await client.close()
