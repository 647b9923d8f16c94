"""Where the API's reads go: the read replica (``read_database_url``) while it
answers, else the primary.

A read the replica cannot serve falls back to the primary; no request fails
because the replica is down. When the replica does not answer, it is marked down
(one warning in the log) and reads go to the primary until a check finds it back
(one line again): the lifespan's :meth:`Reads.watch`, ``/readyz`` and ``/metrics``
check it. ``/readyz`` reports both databases and ``X-Taskiq-Exporter-Read-From``
on each answer names the one that served it. When the primary does not answer a
read either, the answer is a 503, not a 500.

What must see every committed row stays on the primary and does not come through
here: the NOTIFY listener's reads, the store gauges, the schema check, the reaper
and retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exporter.service.errors import ServiceUnavailable
from exporter.service.replica import LagProbe, ReplicaStatus, describe, unreachable
from exporter.service.store_check import UNREACHABLE
from exporter.store import queries

logger = logging.getLogger(__name__)
Source = Literal["primary", "replica"]
T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[T]]
READ_FROM = "X-Taskiq-Exporter-Read-From"
WATCH_SECONDS = 5.0
FENCE_POLL_SECONDS = 0.05
# SQLSTATE classes of a server that cannot take the read at all: 08 connection
# exception, 57P0x shutting down or starting up, 3D000 no such database.
UNREACHABLE_STATES = ("08", "57P", "3D000")
FAILURES = (OSError, TimeoutError, DBAPIError)
BOTH_DOWN = "neither the read replica nor the primary database answers (the service log says why)"


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the server cannot be reached, rather than that a query failed."""
    if isinstance(exc, OSError | TimeoutError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        state = str(getattr(exc.orig, "sqlstate", "") or "")
        return exc.connection_invalidated or state.startswith(UNREACHABLE_STATES)
    return False


@contextlib.asynccontextmanager
async def _connection(engine: AsyncEngine, *, snapshot: bool) -> AsyncIterator[AsyncConnection]:
    if snapshot:
        async with queries.snapshot(engine) as conn:
            yield conn
    else:
        async with engine.connect() as conn:
            yield conn


class Reads:
    """The read paths' way to the database: :meth:`run` a read, and the replica's
    state. Without a replica, every read goes to ``primary``."""

    def __init__(
        self,
        primary: AsyncEngine,
        replica: AsyncEngine | None = None,
        *,
        watch_seconds: float = WATCH_SECONDS,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.probe = None if replica is None else LagProbe(primary, replica)
        self.watch_seconds = watch_seconds
        self.replica_up = replica is not None  # until a check says otherwise
        self.counts: dict[str, int] = {"primary": 0, "replica": 0}
        # The replica state last logged: the lifespan has said it reads from the replica.
        self._announced = True
        self._primary_failing = False

    def _mark(self, up: bool, why: str) -> None:
        self.replica_up = up
        if self._announced is up:
            return
        self._announced = up
        if up:
            logger.info("taskiq-exporter: the read replica answers: the API reads from it")
        else:
            logger.warning(
                "taskiq-exporter: the read replica is %s: the API reads from the primary "
                "until it answers again",
                why,
            )

    async def check(self) -> ReplicaStatus | None:
        """Measure the replica (None without one) and mark it up or down."""
        if self.probe is None:
            return None
        status = await self.probe.measure()
        self._mark(status.reachable, status.detail)
        return status

    async def watch(self) -> None:
        """Check the replica every ``watch_seconds``: run it as a task, cancel it to stop."""
        while True:
            await self.check()
            await asyncio.sleep(self.watch_seconds)

    async def replica_has_caught_up(self, *, seconds: float) -> bool:
        """Whether the replica replays, within ``seconds``, everything the primary has
        committed so far (False at once when it is down or is not a standby)."""
        if self.probe is None or not self.replica_up:
            return False
        deadline = asyncio.get_running_loop().time() + seconds
        try:
            target = await self.probe.primary_position()
            while (replayed := await self.probe.replayed_position()) is not None:
                if replayed >= target:
                    return True
                if asyncio.get_running_loop().time() >= deadline:
                    return False
                await asyncio.sleep(FENCE_POLL_SECONDS)
        except FAILURES:
            return False  # the read itself goes to the primary and tells the rest
        return False

    async def run(
        self, work: Work[T], *, snapshot: bool = False, replica: bool = True
    ) -> tuple[T, Source]:
        """``work(conn)`` on the replica (unless ``replica`` is False or it is down),
        else on the primary; its result and the database that answered. With
        ``snapshot``, in a read-only transaction (:func:`queries.snapshot`)."""
        if replica and self.replica is not None and self.replica_up:
            try:
                async with _connection(self.replica, snapshot=snapshot) as conn:
                    result = await work(conn)
            except FAILURES as exc:
                if is_unreachable(exc):
                    self._mark(False, unreachable(exc))
                else:  # a conflict with recovery, say: this read only
                    logger.warning(
                        "taskiq-exporter: the read replica failed a read (%s); the primary "
                        "answers it",
                        describe(exc),
                    )
            else:
                self.counts["replica"] += 1
                return result, "replica"
        try:
            async with _connection(self.primary, snapshot=snapshot) as conn:
                result = await work(conn)
        except FAILURES as exc:
            if not is_unreachable(exc):
                raise
            if not self._primary_failing:
                logger.warning("taskiq-exporter: the database does not answer: %s", describe(exc))
            self._primary_failing = True
            raise ServiceUnavailable(BOTH_DOWN if self.replica else UNREACHABLE) from exc
        if self._primary_failing:
            logger.info("taskiq-exporter: the database answers again")
        self._primary_failing = False
        self.counts["primary"] += 1
        return result, "primary"

    def headers(self, source: Source) -> dict[str, str]:
        """The header naming the database that answered (only with a replica configured)."""
        return {} if self.replica is None else {READ_FROM: source}
