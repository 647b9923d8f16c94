"""The read replica measured against its primary: whether it answers, whether it has
caught up, and how far behind it is.

"Caught up" compares WAL positions: the primary's ``pg_current_wal_lsn()``, read
first, with the replica's ``pg_last_wal_replay_lsn()``. A replica that has replayed
that far shows every transaction committed before the check: the lag is 0.

Behind, the lag is an upper bound on the age of the oldest commit the replica does
not show yet, the smaller of two bounds:

* the time since the replica's last replayed commit (``now() -
  pg_last_xact_replay_timestamp()`` on the replica, assuming the two servers' clocks
  agree). Alone it misleads: it grows while the primary is idle, so the first commit
  after an idle hour would read as an hour behind until it replays;
* the time since an earlier check whose primary position the replica has replayed
  since (the probe remembers the primary's recent positions).

So "everything committed on the primary more than ``lag`` seconds before the check
is on the replica" holds, which is what a reader of the history wants to know.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exporter.metrics.names import LABEL_DATABASE, REPLICA_LAG, REPLICA_UP, STORE_READS

CHECK_TIMEOUT_SECONDS = 3.0
REMEMBERED_POSITIONS = 256  # a few minutes of checks
PRIMARY_SQL = text("SELECT pg_current_wal_lsn()::text")
REPLICA_SQL = text(
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
    "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, "
    # CASE: pg_is_wal_replay_paused() is an error outside recovery.
    "CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END"
)


def lsn(value: str) -> int:
    """A WAL position ``'16/B374D848'`` as a number."""
    high, _, low = value.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def describe(exc: BaseException) -> str:
    """An error in one line, for the log and /readyz (a URL's password is never in it:
    drivers do not repeat it)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message[:300]}" if message else type(exc).__name__


def unreachable(exc: BaseException) -> str:
    """What /readyz and the log say of a replica that failed with ``exc``."""
    return f"unreachable ({describe(exc)})"


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One check of the replica; ``caught_up`` and ``lag_seconds`` are None when
    they could not be measured (``detail`` says why)."""

    reachable: bool
    caught_up: bool | None = None
    lag_seconds: float | None = None
    detail: str = ""


class LagProbe:
    """Checks the replica against the primary; remembers the primary's recent WAL
    positions (see the module's docstring for what the lag means)."""

    def __init__(
        self, primary: AsyncEngine, replica: AsyncEngine, *, timeout: float = CHECK_TIMEOUT_SECONDS
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.timeout = timeout
        self._positions: deque[tuple[float, int]] = deque(maxlen=REMEMBERED_POSITIONS)

    async def primary_position(self) -> int:
        """The primary's WAL position now: whatever committed before the call ends
        at or before it."""
        started = time.monotonic()  # before the query: every commit before it is included
        async with asyncio.timeout(self.timeout), self.primary.connect() as conn:
            position = lsn((await conn.execute(PRIMARY_SQL)).scalar_one())
        self._positions.append((started, position))
        return position

    async def replayed_position(self) -> int | None:
        """How far the replica has replayed (None when it is not a standby)."""
        async with asyncio.timeout(self.timeout), self.replica.connect() as conn:
            in_recovery, replayed, _, _ = (await conn.execute(REPLICA_SQL)).one()
        return lsn(replayed) if in_recovery and replayed else None

    def _bound(self, replayed: int, since_commit: float | None) -> float | None:
        now = time.monotonic()
        bounds = [now - at for at, position in self._positions if position <= replayed]
        if since_commit is not None:
            bounds.append(since_commit)
        return max(0.0, min(bounds)) if bounds else None

    async def measure(self) -> ReplicaStatus:
        try:
            target: int | None = await self.primary_position()
        except Exception:  # the primary's own state is /readyz's "database"
            target = None
        try:
            async with asyncio.timeout(self.timeout), self.replica.connect() as conn:
                row = (await conn.execute(REPLICA_SQL)).one()
        except Exception as exc:
            return ReplicaStatus(reachable=False, detail=unreachable(exc))
        in_recovery, replayed_text, since_commit, paused = row
        if not in_recovery or replayed_text is None:
            detail = "not a standby (pg_is_in_recovery() is false): no lag to measure"
            return ReplicaStatus(reachable=True, detail=detail)
        replayed = lsn(replayed_text)
        note = "; replay is paused (pg_wal_replay_pause())" if paused else ""
        if target is None:
            detail = "lag unknown: the primary does not answer"
            return ReplicaStatus(reachable=True, detail=detail + note)
        if replayed >= target:
            return ReplicaStatus(
                reachable=True, caught_up=True, lag_seconds=0.0, detail="caught up"
            )
        lag = self._bound(replayed, since_commit)
        detail = f"{target - replayed} bytes of WAL behind the primary{note}"
        return ReplicaStatus(reachable=True, caught_up=False, lag_seconds=lag, detail=detail)


def replica_families(status: ReplicaStatus, reads: Mapping[str, int]) -> list[Metric]:
    """The replica's series for /metrics: up, lag (when measured) and the API's reads
    by the database that answered them."""
    up = GaugeMetricFamily(REPLICA_UP, "1 when the read replica answered this scrape")
    up.add_metric([], 1 if status.reachable else 0)
    out: list[Metric] = [up]
    if status.lag_seconds is not None:
        lag = GaugeMetricFamily(
            REPLICA_LAG,
            "Upper bound on how long ago the oldest commit the read replica does not show "
            "yet was made on the primary; 0 when it has replayed all",
            value=status.lag_seconds,
        )
        out.append(lag)
    counter = CounterMetricFamily(
        STORE_READS,
        "API reads (history, detail, summary, task names, event replay) by the database "
        "that answered them",
        labels=[LABEL_DATABASE],
    )
    for database, count in sorted(reads.items()):
        counter.add_metric([database], count)
    out.append(counter)
    return out
