"""The broker's backlog as gauges, bounded so that a slow broker never holds up a
scrape.

Each scrape reuses the last inspection while it is younger than ``cache_seconds``;
otherwise it starts one (never two at once) and waits for it at most
``budget_seconds``, serving the previous answer if it is not done by then. The
inspection itself is cancelled after ``timeout_seconds``, and its failure clears
the queue series (``taskiq_queue_inspection_up`` 0) rather than serving old
numbers: stale values live at most ``cache_seconds + timeout_seconds``.

Several replicas of the service given the same broker export the same series,
differing only in ``instance``. They are aggregated with ``max by (queue)``, never
summed: every replica reads the same queue, so max is the true value whichever
replicas are up, and there is no leader election whose hand-over would leave a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.brokers.base import Inspector, QueueStats
from exporter.metrics.names import (
    LABEL_BROKER,
    LABEL_QUEUE,
    QUEUE_CONSUMERS,
    QUEUE_IN_FLIGHT,
    QUEUE_INSPECTION_SUPPORTED,
    QUEUE_INSPECTION_UP,
    QUEUE_MESSAGES,
    QUEUE_OLDEST_AGE,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    stats: list[QueueStats] | None  # None: the inspection failed or timed out
    at: float  # time.monotonic()


def queue_families(stats: list[QueueStats]) -> list[Metric]:
    """The per-queue gauges; a value the broker cannot tell has no sample."""
    messages = GaugeMetricFamily(
        QUEUE_MESSAGES, "Messages waiting in the broker's queue", labels=[LABEL_QUEUE]
    )
    age = GaugeMetricFamily(
        QUEUE_OLDEST_AGE,
        "Age of the oldest waiting message in seconds, where the broker tells it",
        labels=[LABEL_QUEUE],
    )
    in_flight = GaugeMetricFamily(
        QUEUE_IN_FLIGHT,
        "Messages delivered to a consumer and not yet acknowledged",
        labels=[LABEL_QUEUE],
    )
    consumers = GaugeMetricFamily(
        QUEUE_CONSUMERS, "Consumers attached to the queue", labels=[LABEL_QUEUE]
    )
    for s in stats:
        for family, value in (
            (messages, s.messages),
            (age, 0.0 if s.messages == 0 else s.oldest_age_seconds),
            (in_flight, s.in_flight),
            (consumers, s.consumers),
        ):
            if value is not None:
                family.add_metric([s.queue], value)
    return [f for f in (messages, age, in_flight, consumers) if f.samples]


class Backlog:
    """The inspection of one broker, cached and bounded for /metrics. ``inspector``
    None means the broker's kind cannot be inspected: said once, here, and then
    only as ``taskiq_queue_inspection_supported`` 0."""

    def __init__(
        self,
        inspector: Inspector | None,
        *,
        broker_name: str,
        timeout_seconds: float,
        budget_seconds: float,
        cache_seconds: float,
    ) -> None:
        self._inspector = inspector
        self._broker = broker_name
        self._timeout = timeout_seconds
        self._budget = budget_seconds
        self._cache = cache_seconds
        self._last: Snapshot | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        if inspector is None:
            logger.warning(
                "the broker %s cannot be inspected: no queue backlog is exported "
                "(supported: taskiq-redis ListQueueBroker and RedisStreamBroker, "
                "taskiq-aio-pika AioPikaBroker, taskiq-nats JetStream brokers)",
                broker_name,
            )

    async def _refresh(self, inspector: Inspector) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                stats: list[QueueStats] | None = await inspector.inspect()
        except Exception as exc:  # whatever the client raises: the inspection failed
            stats = None
            # Once when it starts failing, not at every scrape.
            log = logger.debug if self._failing else logger.warning
            log("inspecting the broker %s failed: %r", self._broker, exc)
        else:
            if self._failing:
                logger.info("inspecting the broker %s works again", self._broker)
        self._failing = stats is None
        self._last = Snapshot(stats, time.monotonic())

    async def families(self) -> list[Metric]:
        """The gauges for one scrape, within the budget."""
        supported = GaugeMetricFamily(
            QUEUE_INSPECTION_SUPPORTED,
            "1 when the service can read this broker's queues (serve --broker)",
            labels=[LABEL_BROKER],
        )
        supported.add_metric([self._broker], 0 if self._inspector is None else 1)
        if self._inspector is None:
            return [supported]
        last = self._last
        if self._task is None and (last is None or time.monotonic() - last.at >= self._cache):
            self._task = asyncio.create_task(self._refresh(self._inspector))
            self._task.add_done_callback(self._done)
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=self._budget)
        last = self._last
        up = GaugeMetricFamily(
            QUEUE_INSPECTION_UP, "1 when the last inspection of the broker's queues answered"
        )
        up.add_metric([], 0 if last is None or last.stats is None else 1)
        queues = [] if last is None or last.stats is None else queue_families(last.stats)
        return [supported, up, *queues]

    def _done(self, task: asyncio.Task[None]) -> None:
        self._task = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inspector is not None:
            await self._inspector.close()
