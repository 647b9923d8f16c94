"""PostgreSQL LISTEN on a dedicated asyncpg connection, fanned out into the hub.

Writers in any process NOTIFY their batch's events in the batch's transaction. The
listener reconnects with backoff when the connection drops, and then publishes the
rows changed while it was away (from the store), so live clients lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.events import PG_CHANNEL, EventHub, TaskEvent
from exporter.service.replay import replay
from exporter.store.pg_admin import asyncpg_dsn
from exporter.store.queries import LogFilter

logger = logging.getLogger(__name__)
# Writers stamp updated_at before they commit: look back a little after a gap.
GAP_OVERLAP = timedelta(seconds=5)
GAP_REPLAY_LIMIT = 50_000
APPLICATION_NAME = "taskiq-exporter-listener"


def parse_payload(payload: str) -> list[TaskEvent]:
    try:
        items = json.loads(payload)
        return [TaskEvent.from_wire(item) for item in items]
    except (ValueError, TypeError) as exc:
        logger.warning("ignoring a malformed event payload (%s): %.200s", exc, payload)
        return []


class PgListener:
    """Run :meth:`run` as a task; cancel it to stop."""

    def __init__(
        self,
        url: str,
        hub: EventHub,
        *,
        engine: AsyncEngine | None = None,
        check_interval: float = 5.0,
        backoff_max: float = 10.0,
    ) -> None:
        self.dsn = asyncpg_dsn(url)
        self.hub = hub
        self.engine = engine
        self.check_interval = check_interval
        self.backoff_max = backoff_max
        self.connected = asyncio.Event()
        self.last_seen: datetime | None = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        events = parse_payload(payload)
        if events:
            self.last_seen = datetime.fromisoformat(events[-1].updated_at)
            self.hub.publish(events)

    async def _fill_gap(self, since: datetime) -> None:
        if self.engine is None:
            return
        events = [
            e
            async for e in replay(
                self.engine,
                since=since - GAP_OVERLAP,
                log_filter=LogFilter(),
                limit=GAP_REPLAY_LIMIT,
            )
        ]
        if events:
            logger.info("listener: replayed %d events missed while disconnected", len(events))
            self.hub.publish(events)

    async def _session(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME}
        )
        try:
            await conn.add_listener(PG_CHANNEL, self._on_notify)
            gap_since = self.last_seen
            self.connected.set()
            logger.info("listening on %s", PG_CHANNEL)
            if gap_since is not None:
                await self._fill_gap(gap_since)
            while True:
                await asyncio.sleep(self.check_interval)
                # Also notices a connection that died silently (no FIN, no error).
                await conn.fetchval("SELECT 1", timeout=self.check_interval)
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

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
