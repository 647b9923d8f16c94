"""taskiq-redis ``RedisStreamBroker``: a Redis stream per queue, read by one consumer
group. XINFO GROUPS tells the group's ``lag`` (entries not yet delivered: waiting)
and ``pending`` (delivered, not acknowledged: in flight). The oldest waiting entry
is the first after the group's last-delivered id; a stream id starts with its
insertion time in milliseconds, so its age needs no label."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis, ResponseError

from exporter.brokers.base import QueueStats


def id_time(entry_id: bytes | str) -> float:
    """Epoch seconds of a stream entry id (``<ms>-<seq>``)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0]) / 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStreamInspector:
    """XINFO GROUPS and one XRANGE of a single entry per stream."""

    def __init__(self, broker: Any) -> None:
        self._pool = broker.connection_pool
        self._group = str(broker.consumer_group_name)
        self._queues = [str(broker.queue_name), *map(str, broker.additional_streams)]

    async def _one(self, redis: Redis, queue: str) -> QueueStats:
        try:
            groups = await redis.xinfo_groups(queue)
        except ResponseError:  # no such key: nothing was ever sent
            return QueueStats(queue=queue, messages=0, in_flight=0)
        group = next((g for g in groups if _text(g["name"]) == self._group), None)
        if group is None:
            # The workers create the group at "$": what the stream holds now will
            # never be delivered to it, so nothing waits for them.
            return QueueStats(queue=queue, messages=0, in_flight=0)
        lag, pending = group.get("lag"), int(group["pending"])
        if lag is None:
            # Redis cannot tell (entries deleted in the middle of the stream), and
            # counting what lies after the group's position is unbounded: no series.
            return QueueStats(queue=queue, messages=None, in_flight=pending)
        age = None
        if lag:
            after = "(" + _text(group["last-delivered-id"])
            first = await redis.xrange(queue, min=after, max="+", count=1)
            if first and first[0][0] is not None:
                age = max(0.0, time.time() - id_time(first[0][0]))
        return QueueStats(queue=queue, messages=int(lag), oldest_age_seconds=age, in_flight=pending)

    async def inspect(self) -> list[QueueStats]:
        async with Redis(connection_pool=self._pool) as redis:
            return [await self._one(redis, queue) for queue in self._queues]

    async def close(self) -> None:
        await self._pool.disconnect()
