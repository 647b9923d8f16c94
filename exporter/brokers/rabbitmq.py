"""taskiq-aio-pika on RabbitMQ: a passive queue declare answers the queue's ready
message count and its consumer count, and changes nothing (a ``basic.get`` would
take a message and, put back, reorder it). AMQP does not tell the unacknowledged
count nor the oldest message's age, so those stay unknown.

Private access: the broker's ``_task_queues`` and ``_conn_kwargs`` (taskiq-aio-pika
0.6), read once here; a broker without them is inspected on its default queue."""

from __future__ import annotations

from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from exporter.brokers.base import BackgroundCloses, QueueStats

DEFAULT_URL = "amqp://guest:guest@localhost:5672"  # taskiq-aio-pika's, for url=None
DEFAULT_QUEUE = "taskiq"


class RabbitInspector:
    """A passive declare per task queue on a connection of the service's own."""

    def __init__(self, broker: Any) -> None:
        self._url = broker.url or DEFAULT_URL
        self._kwargs: dict[str, Any] = dict(getattr(broker, "_conn_kwargs", {}))
        queues = getattr(broker, "_task_queues", None) or []
        self._queues = [str(q.name) for q in queues] or [DEFAULT_QUEUE]
        self._conn: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._closing = BackgroundCloses()

    async def _open_channel(self) -> AbstractChannel:
        if self._conn is None or self._conn.is_closed:
            # Not connect_robust: the caller's timeout and the next scrape retry.
            self._conn = await aio_pika.connect(self._url, **self._kwargs)
            self._channel = None
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._conn.channel()
        return self._channel

    async def inspect(self) -> list[QueueStats]:
        try:
            return [await self._one(queue) for queue in self._queues]
        except BaseException:
            # Cancelled by the timeout or failed mid-call: the connection may be
            # stalled, and the next inspection starts on a new one.
            self._drop()
            raise

    async def _one(self, queue: str) -> QueueStats:
        channel = await self._open_channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            # No worker declared it yet; the broker closed the channel.
            return QueueStats(queue=queue, messages=0, consumers=0)
        result = declared.declaration_result
        return QueueStats(
            queue=queue, messages=result.message_count, consumers=result.consumer_count
        )

    def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            self._closing.add(conn.close())

    async def close(self) -> None:
        await self._closing.wait()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
