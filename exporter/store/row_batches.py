"""What the writers of both databases share: columns, timestamps, events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from exporter.events import TaskEvent
from exporter.rows import COLUMNS, CREATED_AT, QUEUED_AT, LogRow

TIME_COLUMNS = frozenset(("queued_at", "started_at", "completed_at", "created_at"))
TERMINAL_SQL = "('success', 'failed')"
RANK_SQL = "(CASE {col} WHEN 'pending' THEN 0 WHEN 'running' THEN 1 ELSE 2 END)"


def to_dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def status_sql(table: str) -> str:
    """The merged status: terminal is final, otherwise the further along wins."""
    return (
        f"CASE WHEN {table}.status IN {TERMINAL_SQL} THEN {table}.status "
        f"WHEN {RANK_SQL.format(col='excluded.status')} >= {RANK_SQL.format(col=table + '.status')}"
        f" THEN excluded.status ELSE {table}.status END"
    )


def coalesce_updates(
    table: str, least: str | None, *, skipped: frozenset[str] = frozenset()
) -> str:
    """SET clause of the upsert shared by both dialects (``least`` is LEAST or MIN;
    None where created_at is part of the conflict key, so both sides agree);
    ``skipped`` columns are not in the table."""
    sets = [f"status = {status_sql(table)}", "task_name = excluded.task_name"]
    sets.append(f"params = COALESCE({table}.params, excluded.params)")
    for col in COLUMNS[QUEUED_AT:CREATED_AT]:
        if col not in skipped:
            sets.append(f"{col} = COALESCE(excluded.{col}, {table}.{col})")
    if least is not None:
        # A finished row's minute is in the rollups already: its created_at stays.
        sets.append(
            f"created_at = CASE WHEN {table}.status IN {TERMINAL_SQL} THEN {table}.created_at "
            f"ELSE {least}({table}.created_at, excluded.created_at) END"
        )
    # A late write that changes nothing of a finished row (a client's PENDING) keeps
    # its updated_at: replicas and `since` replays see one stamp per change.
    sets.append(
        f"updated_at = CASE WHEN {table}.status IN {TERMINAL_SQL} THEN {table}.updated_at "
        f"ELSE excluded.updated_at END"
    )
    return ", ".join(sets)


class RowStore(Protocol):
    """Writes a batch of rows (one statement family, one transaction) and returns
    the live events of the batch, already published where the store publishes."""

    async def write(self, rows: Sequence[LogRow], now: datetime) -> list[TaskEvent]: ...

    async def close(self) -> None: ...
