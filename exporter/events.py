"""Live task events: the shape shared by the writer, the service and its clients.

Transport on PostgreSQL: each writer batch ends with ``NOTIFY taskiq_exporter_events,
'<updated_at ISO stamp of the batch>'`` in the batch's transaction. A listener
reads the rows with ``updated_at = stamp`` (indexed) and turns each into events
with :func:`events_from_row`, remembering per attempt how far it has already
reported (so a task that started and finished within one batch still yields its
``running`` event, and nothing is reported twice). A reconnecting client passes
the last ``updated_at`` it saw and gets the rows changed since, the same way.
In the embedded SQLite mode the writer publishes events to an in-process
:class:`EventHub` directly.

The hub applies each subscriber's filters as it publishes, into a bounded queue
per subscriber; a subscriber whose queue overflows is told where to resume from
(``events_dropped``) rather than losing events silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PG_CHANNEL = "taskiq_exporter_events"

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One status change of one attempt, as the live-events WebSocket sends it."""

    task_name: str
    status: str
    timestamp: str  # ISO 8601 UTC, when the change happened in the worker
    task_id: str
    attempt: int
    duration_ms: float | None
    error_message: str | None
    updated_at: str  # ISO 8601 UTC, the row's updated_at after this write (resume cursor)

    def to_message(self) -> dict[str, Any]:
        return {
            "type": "task_event",
            "task_name": self.task_name,
            "status": self.status,
            "timestamp": self.timestamp,
            "data": {
                "task_id": self.task_id,
                "attempt": self.attempt,
                "duration_ms": self.duration_ms,
                "error_message": self.error_message,
                "updated_at": self.updated_at,
            },
        }


_RANK = {"pending": 0, "running": 1, "success": 2, "failed": 2}


def events_from_row(row: dict[str, Any], reported_rank: int = -1) -> list[TaskEvent]:
    """The events a stored row implies beyond ``reported_rank`` (-1: none yet).

    ``row`` holds the columns task_name, status, task_id, attempt, queued_at,
    created_at, started_at, completed_at (datetimes), duration_ms, error_message
    and updated_at.
    """
    status = row["status"]
    stamp = row["updated_at"].isoformat()
    steps: list[tuple[str, Any]] = []
    if reported_rank < 0 and status == "pending":
        steps.append(("pending", row.get("queued_at") or row["created_at"]))
    if reported_rank < 1 and row.get("started_at") is not None:
        steps.append(("running", row["started_at"]))
    if _RANK.get(status, 0) == 2 and reported_rank < 2:
        steps.append((status, row.get("completed_at") or row["updated_at"]))
    events = []
    for step, at in steps:
        terminal = _RANK[step] == 2
        message = row.get("error_message") if terminal else None
        events.append(
            TaskEvent(
                task_name=row["task_name"],
                status=step,
                timestamp=at.isoformat(),
                task_id=row["task_id"],
                attempt=row["attempt"],
                duration_ms=row.get("duration_ms") if terminal else None,
                error_message=message[:500] if message else None,
                updated_at=stamp,
            )
        )
    return events


def rank(status: str) -> int:
    return _RANK.get(status, -1)


# The fan-out runs in a task of its own, a slice of events at a time, and gives the
# loop back after every FANOUT_CHUNK deliveries: publish() returns at once, and the
# WebSocket senders, /metrics and the listener run in between, however many
# subscribers and events there are.
FANOUT_SLICE = 256  # events encoded, then offered to every subscriber, at a time
FANOUT_CHUNK = 8_192  # deliveries offered between two yields to the loop
QUEUE_SIZE = 10_000  # events queued per subscriber
SEND_BUDGET = 128  # messages all the streams together send per turn of the loop

# An event and its message's JSON text, encoded once for all the subscribers.
Delivery = tuple[TaskEvent, str]


def encode(event: TaskEvent) -> str:
    """The event's message as Starlette's ``send_json`` would write it."""
    return json.dumps(event.to_message(), separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class Dropped:
    """Stands in a subscriber's queue where events were left out: ``count`` of them
    (the service's own misses, see :meth:`EventHub.gap`, are not counted), none
    changed before ``resume_from``."""

    resume_from: datetime
    count: int = 0

    def to_message(self) -> dict[str, Any]:
        return {
            "type": "events_dropped",
            "resume_from": self.resume_from.isoformat(),
            "dropped": self.count,
        }


class Subscription:
    """One subscriber: its filters, applied as events are published, and its queue.

    The queue holds ``limit`` events. When it is full, newer events are left out
    (those queued still go out, in order) and a :class:`Dropped` marker stands in
    for them; whatever else arrives before the subscriber reaches the marker joins
    it, so a slow subscriber hears once per overflow where to resume from, then
    carries on live."""

    __slots__ = ("_gap", "_gap_stamp", "_items", "_ready", "client", "limit", "status", "task_name")

    def __init__(
        self, *, client: str, task_name: str | None, status: str | None, limit: int
    ) -> None:
        self.client = client
        self.task_name = task_name
        self.status = status
        self.limit = limit
        self._items: deque[Delivery | Dropped] = deque()
        self._ready = asyncio.Event()
        self._gap: Dropped | None = None  # the overflow marker not reached yet
        self._gap_stamp = ""  # the updated_at last compared with the marker's

    def offer(self, deliveries: Sequence[Delivery]) -> int:
        """Queue the events this subscriber wants; how many were left out."""
        items, task_name, status = self._items, self.task_name, self.status
        before, dropped = len(items), 0
        for delivery in deliveries:
            event = delivery[0]
            if task_name is not None and event.task_name != task_name:
                continue
            if status is not None and event.status != status:
                continue
            if self._gap is None and len(items) < self.limit:
                items.append(delivery)
            else:
                self._drop(event.updated_at)
                dropped += 1
        if len(items) != before:
            self._ready.set()
        return dropped

    def _drop(self, stamp: str) -> None:
        if self._gap is None:
            self._gap = Dropped(datetime.fromisoformat(stamp))
            self._gap_stamp = stamp
            self._items.append(self._gap)
        elif stamp != self._gap_stamp:  # a batch's events share one stamp: parse it once
            self._gap_stamp = stamp
            self._gap.resume_from = min(self._gap.resume_from, datetime.fromisoformat(stamp))
        self._gap.count += 1

    def missed(self, resume_from: datetime) -> None:
        """Events changed from ``resume_from`` on never reached the hub."""
        if self._gap is not None:
            self._gap.resume_from = min(self._gap.resume_from, resume_from)
        else:
            self._items.append(Dropped(resume_from))
            self._ready.set()

    async def get(self) -> Delivery | Dropped:
        """The next event (with its encoded message) or marker, waiting for one."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if item is self._gap:
            self._gap = None
        return item

    def __len__(self) -> int:
        return len(self._items)


class Turns:
    """Shares ``budget`` units of work per turn of the event loop among the tasks that
    :meth:`take` them (the WebSocket streams, a unit a message): once a turn's budget
    is spent, takers wait in line, costing the loop nothing, and are served in order
    in the next turns. However many streams are busy, a turn's work (and so how long
    anything else on the loop waits: /metrics, the listener) stays bounded."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._spent = 0
        self._line: deque[tuple[asyncio.Future[int], int]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn_due = False
        self.granted = 0  # units granted since start (tests, debugging)

    async def take(self, wanted: int) -> int:
        """Between 1 and ``wanted`` units to spend now, once it is this task's turn."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a hub outlives its loop in tests: start afresh
            self._loop, self._line, self._spent, self._turn_due = loop, deque(), 0, False
        if not self._line and self._spent < self.budget:
            granted = min(wanted, self.budget - self._spent)
            self._spent += granted
            self.granted += granted
            self._next_turn(loop)
            return granted
        future: asyncio.Future[int] = loop.create_future()
        self._line.append((future, wanted))
        self._next_turn(loop)
        return await future

    def _next_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._turn_due:
            self._turn_due = True
            loop.call_soon(self._new_turn, loop)

    def _new_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        self._turn_due = False
        self._spent = 0
        while self._line and self._spent < self.budget:
            future, wanted = self._line.popleft()
            if future.done():  # its task was cancelled
                continue
            granted = min(wanted, self.budget - self._spent)
            self._spent += granted
            self.granted += granted
            future.set_result(granted)
        if self._line or self._spent:
            self._next_turn(loop)


@dataclass(slots=True)
class EventStats:
    """Counts about the event streams, for the service's /metrics."""

    dropped: int = 0  # events left out of full subscriber queues
    refused: dict[str, int] = field(default_factory=dict)  # connections refused, by reason
    replays_truncated: int = 0


class EventHub:
    """In-process fan-out of events to subscribers. :meth:`publish` returns at once;
    a task hands the events to the subscribers in chunks (see FANOUT_CHUNK), applying
    each one's filters, into bounded queues (see :class:`Subscription`)."""

    def __init__(
        self,
        *,
        queue_size: int = QUEUE_SIZE,
        chunk: int = FANOUT_CHUNK,
        send_budget: int = SEND_BUDGET,
    ) -> None:
        self._subscriptions: dict[Subscription, None] = {}  # an ordered set
        self._clients: Counter[str] = Counter()
        self._queue_size = queue_size
        self._chunk = chunk
        # Batches of events, and datetimes: what the service missed from then on.
        self._backlog: deque[list[TaskEvent] | datetime] = deque()
        self._fanout: asyncio.Task[None] | None = None
        self.stats = EventStats()
        self.turns = Turns(send_budget)  # shared by the streams' senders

    def publish(self, events: Sequence[TaskEvent]) -> None:
        """Hand ``events`` to every subscriber that wants them, in order."""
        if events and self._subscriptions:
            self._backlog.append(list(events))
            self._wake()

    def gap(self, resume_from: datetime) -> None:
        """Tell every subscriber that the events of rows changed from ``resume_from``
        on did not all reach the hub (the listener could not read them all)."""
        if self._subscriptions:
            self._backlog.append(resume_from)
            self._wake()

    def _wake(self) -> None:
        if self._fanout is not None and not self._fanout.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a caller outside the loop: no one to yield to
            for _ in self._deliver():
                pass
            return
        self._fanout = loop.create_task(self._run(), name="taskiq-exporter-events-fanout")

    async def _run(self) -> None:
        try:
            for _ in self._deliver():
                await asyncio.sleep(0)
        except Exception:  # the next publish starts another run
            logger.exception("event fan-out failed")

    def _deliver(self) -> Iterator[None]:
        """The fan-out; pauses (yields) after each chunk of deliveries."""
        work = 0
        while self._backlog:
            item = self._backlog.popleft()
            if isinstance(item, datetime):
                for sub in list(self._subscriptions):
                    sub.missed(item)
                continue
            for start in range(0, len(item), FANOUT_SLICE):
                if not self._subscriptions:
                    break
                deliveries = [
                    (event, encode(event)) for event in item[start : start + FANOUT_SLICE]
                ]
                yield  # the encoding was a chunk's worth of work
                for sub in list(self._subscriptions):
                    self.stats.dropped += sub.offer(deliveries)
                    work += len(deliveries)
                    if work >= self._chunk:
                        work = 0
                        yield

    async def idle(self) -> None:
        """Return once everything published so far was handed to the subscribers."""
        while self._fanout is not None and not self._fanout.done():
            await asyncio.wait({self._fanout})

    @contextlib.contextmanager
    def subscribe(
        self,
        *,
        client: str = "",
        task_name: str | None = None,
        status: str | None = None,
        queue_size: int | None = None,
    ) -> Iterator[Subscription]:
        """A subscription for events matching ``task_name`` and ``status`` (None: any);
        ``client`` (a remote address) is counted by :meth:`connections`."""
        sub = Subscription(
            client=client, task_name=task_name, status=status, limit=queue_size or self._queue_size
        )
        self._subscriptions[sub] = None
        self._clients[client] += 1
        try:
            yield sub
        finally:
            del self._subscriptions[sub]
            self._clients[client] -= 1
            if not self._clients[client]:
                del self._clients[client]

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def connections(self, client: str) -> int:
        """How many subscriptions ``client`` holds."""
        return self._clients[client]
