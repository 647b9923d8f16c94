"""What every broker inspector answers, and the shape of its answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

CLOSE_TIMEOUT_SECONDS = 5.0

# A message's send time (epoch seconds) from its labels, or None: the broker modules
# do not know the middleware's labels, the service tells them how to read one.
SentTime = Callable[[Mapping[str, Any]], float | None]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue as the broker sees it; None where the broker cannot tell."""

    queue: str
    messages: int | None  # waiting: not yet delivered to a consumer
    oldest_age_seconds: float | None = None
    in_flight: int | None = None  # delivered, not yet acknowledged
    consumers: int | None = None


class Inspector(Protocol):
    """Reads the queues of one broker without consuming, reordering or declaring
    anything. ``inspect`` may take as long as the broker does: the caller bounds it."""

    async def inspect(self) -> list[QueueStats]: ...

    async def close(self) -> None: ...


class BackgroundCloses:
    """An inspector's dropped connections, closed in the background: a stalled peer
    must not hold up the caller. ``wait`` for them when the inspector closes."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def add(self, closing: Awaitable[Any]) -> None:
        task = asyncio.create_task(self._bounded(closing))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    @staticmethod
    async def _bounded(closing: Awaitable[Any]) -> None:
        await asyncio.wait_for(closing, CLOSE_TIMEOUT_SECONDS)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed close is no news

    async def wait(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks)
