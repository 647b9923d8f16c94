"""What every broker inspector answers, and the shape of its answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

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
