"""A taskiq app on any broker whose backlog the service reads, for
``taskiq worker tests.helpers.backlog_app:broker``: the broker's kind and queue
from the environment (``TEST_BROKER``: list, stream, amqp or nats; ``TEST_QUEUE``),
with the monitoring middleware, as a production app would be configured.
``TEST_QUEUES`` queues where the broker reads several (bench_scrape). ``python -m
tests.helpers.backlog_app send N`` sends N tasks that each take ``TEST_TASK_SECONDS``."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from taskiq import AsyncBroker

from exporter import MonitoringMiddleware
from tests.helpers.brokers import make_broker


def monitored(kind: str, queue: str, *, queues: int = 1, **middleware: Any) -> AsyncBroker:
    broker = make_broker(kind, queue, queues=queues)
    return broker.with_middlewares(MonitoringMiddleware(**middleware))


broker = monitored(
    os.environ.get("TEST_BROKER", "list"),
    os.environ.get("TEST_QUEUE", "texp"),
    queues=int(os.environ.get("TEST_QUEUES", "1")),
)


@broker.task(task_name="backlog:work")
async def work() -> None:
    await asyncio.sleep(float(os.environ.get("TEST_TASK_SECONDS", "0")))


async def send(total: int) -> None:
    await broker.startup()
    try:
        for _ in range(total):
            await work.kiq()
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    _, command, count = sys.argv
    assert command == "send"
    asyncio.run(send(int(count)))
