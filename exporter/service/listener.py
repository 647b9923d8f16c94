"""PostgreSQL LISTEN on a dedicated asyncpg connection, fanned out into the hub.

Each writer batch NOTIFYs its ``updated_at`` stamp in the batch's transaction
(exporter.store.pg_writer). The listener reads the rows written with the stamps
that arrived (indexed, on a connection it keeps) and turns them into events with
:func:`exporter.events.events_from_row`, remembering per attempt how far it has
reported: a task that started and finished within one batch still yields its
``running`` event, and a row seen again yields nothing twice. While no client
subscribes it reads nothing (a host's service mostly runs with nobody watching
the live events): it only notes the newest stamp. It reconnects with backoff
when the connection drops, then reports the rows changed meanwhile (up to
GAP_REPLAY_LIMIT; beyond, each subscriber is told where to resume from).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exporter.events import PG_CHANNEL, EventHub, TaskEvent, events_from_row, rank
from exporter.service.reads import Reads
from exporter.service.replay import Replay, rows_at
from exporter.store.pg_admin import asyncpg_dsn
from exporter.store.queries import AnyRow, LogFilter

logger = logging.getLogger(__name__)
# Writers stamp updated_at before they commit: look back a little after a gap.
GAP_OVERLAP = timedelta(seconds=5)
GAP_REPLAY_LIMIT = 5_000  # then the subscribers are told to resume (EventHub.gap)
APPLICATION_NAME = "taskiq-exporter-listener"
REMEMBERED_ATTEMPTS = 100_000
STAMPS_PER_READ = 500


def parse_stamp(payload: str) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(payload)
    except ValueError:
        logger.warning("ignoring a notification that is not a batch stamp: %.200s", payload)
        return None
    return stamp if stamp.tzinfo is not None else None


class ReportedAttempts:
    """How far each recent attempt has been reported (bounded: the oldest forgotten)."""

    def __init__(self, limit: int = REMEMBERED_ATTEMPTS) -> None:
        self._ranks: dict[tuple[str, int], int] = {}
        self._limit = limit

    def events(self, rows: Iterable[AnyRow]) -> list[TaskEvent]:
        out: list[TaskEvent] = []
        for row in rows:
            fields = dict(row._mapping)
            key = (fields["task_id"], fields["attempt"])
            done = self._ranks.pop(key, -1)
            out += events_from_row(fields, done)
            self._ranks[key] = max(done, rank(fields["status"]))
        while len(self._ranks) > self._limit:
            del self._ranks[next(iter(self._ranks))]
        return out


class PgListener:
    """Run :meth:`run` as a task; cancel it to stop."""

    def __init__(
        self,
        url: str,
        hub: EventHub,
        *,
        engine: AsyncEngine,
        check_interval: float = 5.0,
        backoff_max: float = 10.0,
    ) -> None:
        self.dsn = asyncpg_dsn(url)
        self.hub = hub
        self.engine = engine
        # The primary only: the rows a NOTIFY names may not be on a replica yet.
        self.reads = Reads(engine)
        self.check_interval = check_interval
        self.backoff_max = backoff_max
        self.connected = asyncio.Event()
        self.last_seen: datetime | None = None
        self.reported = ReportedAttempts()
        self.rows_read = 0  # rows read for events since start (tests and debugging)
        # Batch stamps in arrival order; None: the LISTEN connection was lost.
        self._stamps: asyncio.Queue[datetime | None] = asyncio.Queue()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        stamp = parse_stamp(payload)
        if stamp is not None:
            self._stamps.put_nowait(stamp)

    def _on_lost(self, _conn: Any) -> None:
        self._stamps.put_nowait(None)

    def _seen(self, newest: datetime) -> None:
        if self.last_seen is None or newest > self.last_seen:
            self.last_seen = newest

    def _publish(self, rows: Iterable[AnyRow]) -> None:
        rows = list(rows)
        self.rows_read += len(rows)
        if not rows:
            return
        self._seen(rows[-1].updated_at)
        events = self.reported.events(rows)
        if events:
            self.hub.publish(events)

    async def _fill_gap(self, since: datetime) -> None:
        if not self.hub.subscribers:
            return  # nobody to tell (see _read)
        replay = Replay(
            self.reads,
            since=since - GAP_OVERLAP,
            log_filter=LogFilter(),
            limit=GAP_REPLAY_LIMIT,
        )
        rows = [row async for row in replay.rows()]
        if rows:
            logger.info("listener: %d rows changed while disconnected", len(rows))
            self._publish(rows)
        if replay.resume_from is not None:
            # More changed than a subscriber's queue could take anyway: each is told
            # where to resume from (events_dropped) instead of missing them silently.
            logger.warning(
                "listener: more than %d rows changed while disconnected; subscribers "
                "are told to resume from %s",
                GAP_REPLAY_LIMIT,
                replay.resume_from.isoformat(),
            )
            self.hub.gap(replay.resume_from)

    async def _read(self, reader: AsyncConnection, first: datetime) -> None:
        stamps = {first}
        while not self._stamps.empty() and len(stamps) < STAMPS_PER_READ:
            stamp = self._stamps.get_nowait()
            if stamp is None:
                raise ConnectionError("the LISTEN connection was lost")
            stamps.add(stamp)
        if not self.hub.subscribers:
            # Nobody to tell: skip the read. A client that subscribes later gets
            # these rows from its ``since`` replay, which reads the store.
            self._seen(max(stamps))
            return
        async with reader.begin():  # no transaction stays open between batches
            rows = await rows_at(reader, stamps=sorted(stamps))
        self._publish(rows)

    async def _session(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME}
        )
        try:
            async with self.engine.connect() as reader:
                conn.add_termination_listener(self._on_lost)
                await conn.add_listener(PG_CHANNEL, self._on_notify)
                gap_since = self.last_seen
                self.connected.set()
                logger.info("listening on %s", PG_CHANNEL)
                if gap_since is not None:
                    await self._fill_gap(gap_since)
                while True:
                    try:
                        first = await asyncio.wait_for(self._stamps.get(), self.check_interval)
                    except TimeoutError:
                        # Also notices a connection that died silently (no FIN, no error).
                        await conn.fetchval("SELECT 1", timeout=self.check_interval)
                        continue
                    if first is None:
                        raise ConnectionError("the LISTEN connection was lost")
                    await self._read(reader, first)
        finally:
            self.connected.clear()
            conn.remove_termination_listener(self._on_lost)
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
            while not self._stamps.empty():  # stamps of a lost session: the gap fill reads them
                self._stamps.get_nowait()

    async def run(self) -> None:
        delay = 0.5
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if asyncio.get_running_loop().time() - started > 30:
                    delay = 0.5
                logger.warning("event listener lost (%s); reconnecting in %.1fs", exc, delay)
                if self.last_seen is None:
                    self.last_seen = datetime.now().astimezone()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)
