"""A taskiq app for the multi-process tests: ``taskiq worker tests.helpers.worker_app:broker``.

Configured from the environment (queue name, store, multiprocess directory), as
a production app would be. ``python -m tests.helpers.worker_app send N F``
sends N quick tasks of which F fail.
"""

from __future__ import annotations

import asyncio
import os
import sys

from taskiq_redis import ListQueueBroker

from exporter import MonitoringMiddleware

broker = ListQueueBroker(
    os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    queue_name=os.environ.get("TEST_QUEUE", "taskiq-exporter-tests"),
    socket_timeout=None,  # redis-py's 5 s default would kill an idle worker's BRPOP
).with_middlewares(MonitoringMiddleware())


@broker.task(task_name="w:quick")
async def quick(i: int) -> int:
    return i


@broker.task(task_name="w:fail")
async def fail(i: int) -> None:
    raise RuntimeError(f"failure {i}")


@broker.task(task_name="w:slow")
async def slow(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def send(total: int, failing: int, slow_seconds: float) -> None:
    await broker.startup()
    for i in range(total):
        await (fail if i < failing else quick).kiq(i)
    if slow_seconds:
        await slow.kiq(slow_seconds)
    await broker.shutdown()


if __name__ == "__main__":
    _, command, *args = sys.argv
    assert command == "send"
    asyncio.run(send(int(args[0]), int(args[1]), float(args[2]) if len(args) > 2 else 0.0))
