"""A bounded buffer of rows keyed by attempt: a task that starts and ends
between two flushes is one row, not an insert and an update."""

from __future__ import annotations

from collections import OrderedDict

from exporter.middleware.rows import (
    ATTEMPT,
    TASK_ID,
    BufferKey,
    LogRow,
    absorb,
    buffer_key,
    new_row,
)

DROPPED_KEYS_KEPT = 10_000


class RowBuffer:
    """Rows waiting for the writer. Past ``max_rows`` new rows are dropped and
    counted (updates to rows already held are always accepted)."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows: dict[BufferKey, LogRow] = {}
        # How many rows ``rows`` may hold now: max_rows less those in flight. The
        # hooks test ``len(rows) < room`` inline, without a call.
        self.room = max_rows
        self._in_flight = 0
        self.dropped = 0
        # Attempts already counted as dropped: the send, start and end of one
        # attempt are one lost row, not three. Bounded; the oldest are forgotten
        # (an OrderedDict: a dict's first key is found by scanning past every
        # deleted one, which made each drop during an outage cost microseconds).
        self._dropped_keys: OrderedDict[BufferKey, None] = OrderedDict()

    @property
    def in_flight(self) -> int:
        """Rows handed to the writer and not settled yet."""
        return self._in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self._in_flight = value
        self.room = self.max_rows - value

    def __len__(self) -> int:
        return len(self.rows) + self.in_flight

    def admit(self, key: BufferKey, row: LogRow) -> bool:
        """Hold a new row for this attempt if there is room; count it dropped if not.
        (The hooks look in ``rows`` first: an attempt already held is updated there.)"""
        if len(self.rows) >= self.room:
            self._count_drop(key)
            return False
        self.rows[key] = row
        return True

    def row(self, task_id: str, attempt: int, task_name: str, now: float) -> LogRow | None:
        """The buffered row for this attempt, created (PENDING) if there is room."""
        key = buffer_key(task_id, attempt)
        row = self.rows.get(key)
        if row is None:
            row = new_row(task_id, attempt, task_name, now)
            if not self.admit(key, row):
                return None
        return row

    def _count_drop(self, key: BufferKey) -> None:
        if key in self._dropped_keys:
            return
        self.dropped += 1
        self._dropped_keys[key] = None
        if len(self._dropped_keys) > DROPPED_KEYS_KEPT:
            self._dropped_keys.popitem(last=False)

    def take(self, limit: int) -> list[LogRow]:
        """Hand up to ``limit`` rows to the writer; they stay counted until settled."""
        if len(self.rows) <= limit:
            batch = list(self.rows.values())
            self.rows.clear()  # the same dict: the hooks keep a reference to it
        else:
            keys = list(self.rows)[:limit]
            batch = [self.rows.pop(k) for k in keys]
        self.in_flight += len(batch)
        return batch

    def settle(self, batch: list[LogRow], *, written: bool) -> None:
        """The writer is done with ``batch``: forget it, or put it back to retry,
        merging what the hooks buffered for the same attempts meanwhile."""
        self.in_flight -= len(batch)
        if written:
            return
        for old in batch:
            key = buffer_key(old[TASK_ID], old[ATTEMPT])
            newer = self.rows.pop(key, None)
            if newer is not None:
                absorb(old, newer)
            self.rows[key] = old
