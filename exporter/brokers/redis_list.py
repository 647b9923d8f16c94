"""taskiq-redis ``ListQueueBroker``: a Redis list per queue. ``kick`` LPUSHes at the
head and the workers BRPOP from the tail, so the tail is the oldest message: LINDEX
-1 reads it in place (nothing is popped, nothing moves). The message is taskiq's
JSON (``TaskiqMessage``); its age comes from the send time the middleware stamps in
its labels, so a message sent without the middleware has none."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from exporter.brokers.base import QueueStats, SentTime


def message_age(raw: bytes | None, sent_time: SentTime, now: float) -> float | None:
    """Seconds since the message in ``raw`` was sent, None if it does not say."""
    if raw is None:
        return None
    try:
        labels = json.loads(raw).get("labels")
    except (ValueError, AttributeError):
        return None
    sent = sent_time(labels) if isinstance(labels, dict) else None
    return None if sent is None else max(0.0, now - sent)


class RedisListInspector:
    """LLEN and LINDEX -1 of the broker's list, in one round trip."""

    def __init__(self, broker: Any, *, sent_time: SentTime) -> None:
        # The broker's own pool (taskiq-redis opens its connections lazily): the
        # service never calls the broker's startup, which is the worker's business.
        self._pool = broker.connection_pool
        self._queues = [str(broker.queue_name)]
        self._sent_time = sent_time

    async def inspect(self) -> list[QueueStats]:
        async with Redis(connection_pool=self._pool) as redis:
            pipe = redis.pipeline(transaction=False)
            for queue in self._queues:
                pipe.llen(queue)
                pipe.lindex(queue, -1)
            answers = await pipe.execute()
        now = time.time()
        stats = []
        for i, queue in enumerate(self._queues):
            length, tail = answers[2 * i], answers[2 * i + 1]
            age = message_age(tail, self._sent_time, now) if length else None
            stats.append(QueueStats(queue=queue, messages=int(length), oldest_age_seconds=age))
        return stats

    async def close(self) -> None:
        await self._pool.disconnect()
