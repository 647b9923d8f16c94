"""taskiq-redis ``RedisStreamBroker``: a Redis stream per queue, read by one consumer
group. XINFO GROUPS tells the group's ``lag`` (entries not yet delivered: waiting)
and ``pending`` (delivered, not acknowledged: in flight). The oldest waiting entry
is the first after the group's last-delivered id; a stream id starts with its
insertion time in milliseconds, so its age needs no label."""

from __future__ import annotations

import time
from dataclasses import replace
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
    """XINFO GROUPS of every stream, then one XRANGE of a single entry per stream with
    entries waiting: two round trips whatever the number of streams."""

    def __init__(self, broker: Any) -> None:
        self._pool = broker.connection_pool
        self._group = str(broker.consumer_group_name)
        self._queues = [str(broker.queue_name), *map(str, broker.additional_streams)]

    def _stats(self, queue: str, groups: Any) -> tuple[QueueStats, str | None]:
        """The stream's counts, and the id after which its oldest waiting entry lies."""
        if isinstance(groups, ResponseError):  # no such key: nothing was ever sent
            return QueueStats(queue=queue, messages=0, in_flight=0), None
        if isinstance(groups, Exception):
            raise groups
        group = next((g for g in groups if _text(g["name"]) == self._group), None)
        if group is None:
            # The workers create the group at "$": what the stream holds now will
            # never be delivered to it, so nothing waits for them.
            return QueueStats(queue=queue, messages=0, in_flight=0), None
        lag, pending = group.get("lag"), int(group["pending"])
        if lag is None:
            # Redis cannot tell (entries deleted in the middle of the stream), and
            # counting what lies after the group's position is unbounded: no series.
            return QueueStats(queue=queue, messages=None, in_flight=pending), None
        after = "(" + _text(group["last-delivered-id"]) if lag else None
        return QueueStats(queue=queue, messages=int(lag), in_flight=pending), after

    async def inspect(self) -> list[QueueStats]:
        async with Redis(connection_pool=self._pool) as redis:
            pipe = redis.pipeline(transaction=False)
            for queue in self._queues:
                pipe.xinfo_groups(queue)
            answers = await pipe.execute(raise_on_error=False)
            found = [self._stats(q, a) for q, a in zip(self._queues, answers, strict=True)]
            waiting = [(i, after) for i, (_, after) in enumerate(found) if after is not None]
            if not waiting:
                return [stats for stats, _ in found]
            pipe = redis.pipeline(transaction=False)
            for i, after in waiting:
                pipe.xrange(self._queues[i], min=after, max="+", count=1)
            firsts = await pipe.execute()
        now = time.time()
        stats = [s for s, _ in found]
        for (i, _), first in zip(waiting, firsts, strict=True):
            if first and first[0][0] is not None:
                age = max(0.0, now - id_time(first[0][0]))
                stats[i] = replace(stats[i], oldest_age_seconds=age)
        return stats

    async def close(self) -> None:
        await self._pool.disconnect()
