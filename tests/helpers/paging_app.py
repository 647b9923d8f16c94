"""A taskiq app whose tasks fail while a flag file exists, for the paging test:
``taskiq worker tests.helpers.paging_app:broker``.

Configured from the environment: ``TEST_QUEUE``, ``TEST_REDIS_URL`` and
``PAGING_FAIL_FLAG`` (the flag file's path). ``python -m tests.helpers.paging_app
produce RATE`` sends RATE tasks of each name a second until it is terminated.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from taskiq_redis import ListQueueBroker

from exporter import MonitoringMiddleware

PLAIN = "page:plain"  # no objective: the static failure-rate alerts watch it
SLO = "page:slo"  # the SLO file gives it a success objective: the burn-rate alerts
TASK_NAMES = (PLAIN, SLO)

broker = ListQueueBroker(
    os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    queue_name=os.environ.get("TEST_QUEUE", "taskiq-exporter-paging"),
    socket_timeout=None,  # redis-py's 5 s default would kill an idle worker's BRPOP
).with_middlewares(MonitoringMiddleware())


def _outcome(name: str, i: int) -> int:
    if Path(os.environ["PAGING_FAIL_FLAG"]).exists():
        raise RuntimeError(f"{name} {i} fails while the flag is set")
    return i


@broker.task(task_name=PLAIN)
async def plain(i: int) -> int:
    return _outcome(PLAIN, i)


@broker.task(task_name=SLO)
async def slo(i: int) -> int:
    return _outcome(SLO, i)


async def produce(rate: float) -> None:
    await broker.startup()
    i = 0
    while True:
        for task in (plain, slo):
            await task.kiq(i)
        i += 1
        await asyncio.sleep(1 / rate)


if __name__ == "__main__":
    _, command, rate = sys.argv
    assert command == "produce"
    asyncio.run(produce(float(rate)))
