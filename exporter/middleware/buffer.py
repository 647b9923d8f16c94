"""A bounded buffer of rows keyed by attempt: a task that starts and ends
between two flushes is one row, not an insert and an update.

It is bounded in rows and in bytes, as :func:`row_bytes` estimates them. The
hooks add a row after one length test against ``room`` and measure nothing:
``room`` leaves space only for rows as large as the caps allow (``max_row_bytes``
each), so rows are measured only once that many could reach ``max_bytes``, a few
thousand at the defaults (during an outage, never in normal operation). Then the
rows not measured yet are the newest (a dict keeps insertion order); the slow
path of :meth:`RowBuffer.admit` measures them when ``room`` runs out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from exporter.middleware.labels import BufferKey, buffer_key
from exporter.rows import (
    ATTEMPT,
    ERROR_MESSAGE,
    ERROR_TRACEBACK,
    PARAMS,
    PENDING,
    RUNNING,
    STATUS,
    TASK_ID,
    LogRow,
    absorb,
    log_row,
)

if TYPE_CHECKING:
    from exporter.settings import ExporterSettings

DROPPED_KEYS_KEPT = 10_000
TRACEBACK_DROPPED = "[traceback dropped: exporter buffer full]"
# A row's memory besides its texts: the list, its numbers, task id and name, the
# buffer's entry.
ROW_OVERHEAD = 400
# Room for the truncation markers the caps add.
MARKERS = 3 * 64
DEFAULT_MAX_BYTES = 256 * 2**20
DEFAULT_MAX_ROW_BYTES = ROW_OVERHEAD + MARKERS + 16_384 + 2_048 + 32_768


def row_bytes(row: LogRow) -> int:
    """What a row holds, roughly: its fixed part and a byte a character of its texts
    (params JSON, error message, traceback)."""
    size = ROW_OVERHEAD
    for i in (PARAMS, ERROR_MESSAGE, ERROR_TRACEBACK):
        text = row[i]
        if text:
            size += len(text)
    return size


class RowBuffer:
    """Rows waiting for the writer. Past ``max_rows``, or ``max_bytes``, new rows
    are dropped and counted (updates to rows already held are always accepted).
    Before a row is dropped for bytes, held failures lose their tracebacks, oldest
    first (:data:`TRACEBACK_DROPPED` instead), counted in ``tracebacks_dropped``."""

    def __init__(
        self,
        max_rows: int,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    ) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_row_bytes = max_row_bytes
        self.rows: dict[BufferKey, LogRow] = {}
        # How many rows ``rows`` may hold now. The hooks test ``len(rows) < room``
        # inline, without a call.
        self.room = max_rows
        self.dropped = 0
        self.tracebacks_dropped = 0
        self._in_flight = 0
        # Batches the writer holds, by id: the batch, its bytes, whether measured
        # (if not, counted as max_row_bytes a row).
        self._batches: dict[int, tuple[list[LogRow], int, bool]] = {}
        self._flight_bytes = 0
        # While measuring: the sizes of the held rows measured, and their sum.
        self._measuring = False
        self._sizes: dict[BufferKey, int] = {}
        self._held_bytes = 0
        # Measured rows that may still grow: RUNNING ones (a failure adds its
        # traceback in place). Few: about the attempts running now.
        self._running: dict[BufferKey, None] = {}
        # Measured rows with a traceback, oldest first: what goes under pressure.
        self._tracebacks: OrderedDict[BufferKey, None] = OrderedDict()
        # Attempts already counted as dropped: the send, start and end of one
        # attempt are one lost row, not three. Bounded; the oldest are forgotten
        # (an OrderedDict: a dict's first key is found by scanning past every
        # deleted one, which made each drop during an outage cost microseconds).
        self._dropped_keys: OrderedDict[BufferKey, None] = OrderedDict()
        self._update_room()

    @classmethod
    def from_settings(cls, settings: ExporterSettings) -> RowBuffer:
        s = settings
        largest = ROW_OVERHEAD + MARKERS + s.max_params_bytes
        largest += s.max_error_message_bytes + s.max_traceback_bytes
        return cls(s.max_buffer_rows, max_bytes=s.max_buffer_bytes, max_row_bytes=largest)

    @property
    def in_flight(self) -> int:
        """Rows handed to the writer and not settled yet."""
        return self._in_flight

    @property
    def bytes(self) -> int:
        """The estimated bytes held, counting rows not measured as the largest."""
        unmeasured = len(self.rows) - len(self._sizes)
        return self._held_bytes + self._flight_bytes + unmeasured * self.max_row_bytes

    def __len__(self) -> int:
        return len(self.rows) + self._in_flight

    def admit(self, key: BufferKey, row: LogRow) -> bool:
        """Hold a new row for this attempt if there is room; count it dropped if not.
        (The hooks look in ``rows`` first: an attempt already held is updated there.)"""
        if len(self.rows) < self.room:
            self.rows[key] = row
            return True
        return self._admit_measured(key, row)

    def row(self, task_id: str, attempt: int, task_name: str, now: float) -> LogRow | None:
        """The buffered row for this attempt, created (PENDING) if there is room."""
        key = buffer_key(task_id, attempt)
        row = self.rows.get(key)
        if row is None:
            row = log_row(task_id, attempt, task_name, PENDING, created_at=now)
            if not self.admit(key, row):
                return None
        return row

    def take(self, limit: int) -> list[LogRow]:
        """Hand up to ``limit`` rows to the writer; they stay counted until settled."""
        if self._measuring:
            self.measure()
        if len(self.rows) <= limit:
            keys = list(self.rows) if self._measuring else ()
            batch = list(self.rows.values())
            self.rows.clear()  # the same dict: the hooks keep a reference to it
        else:
            keys = list(self.rows)[:limit]
            batch = [self.rows.pop(k) for k in keys]
        if self._measuring:
            size = sum(self._forget(k) for k in keys)
        else:
            size = len(batch) * self.max_row_bytes
        self._batches[id(batch)] = (batch, size, self._measuring)
        self._flight_bytes += size
        self._in_flight += len(batch)
        self._update_room()
        return batch

    def settle(self, batch: list[LogRow], *, written: bool) -> None:
        """The writer is done with ``batch``: forget it, or put it back to retry."""
        _, size, _ = self._batches.pop(id(batch))
        self._flight_bytes -= size
        self._in_flight -= len(batch)
        if written:
            if self._measuring and len(self) <= self.max_bytes // self.max_row_bytes // 2:
                self._stop_measuring()
            self._update_room()
        else:
            self.put_back(batch)

    def put_back(self, rows: Sequence[LogRow]) -> None:
        """Hold again rows the writer could not write, merging what the hooks
        buffered for the same attempts meanwhile."""
        if self._measuring:
            self.measure()  # the rows put back go last: all before them measured
        for old in rows:
            key = buffer_key(old[TASK_ID], old[ATTEMPT])
            newer = self.rows.pop(key, None)
            if newer is not None:
                self._forget(key)
                absorb(old, newer)
            self.rows[key] = old
            if self._measuring:
                self._note(key, old)
        self._update_room()

    def measure(self) -> None:
        """Measure the rows not measured yet, and again those that may have grown."""
        if not self._measuring:
            self._measuring = True
            for id_, (batch, size, measured) in list(self._batches.items()):
                if not measured:
                    exact = sum(map(row_bytes, batch))
                    self._flight_bytes += exact - size
                    self._batches[id_] = (batch, exact, True)
        sizes, rows = self._sizes, self.rows
        new = []
        for key in reversed(rows):
            if key in sizes:
                break
            new.append(key)
        for key in reversed(new):
            self._note(key, rows[key])
        for key in list(self._running):
            self._held_bytes -= sizes.pop(key)
            del self._running[key]
            self._note(key, rows[key])
        self._update_room()

    def _admit_measured(self, key: BufferKey, row: LogRow) -> bool:
        if len(self) >= self.max_rows:
            return self._drop(key)
        self.measure()
        if len(self.rows) < self.room:
            self.rows[key] = row
            return True
        # Full by bytes: this row's own size decides, tracebacks go before it does.
        need = row_bytes(row) - (self.max_bytes - self.bytes)
        while need > 0 and self._tracebacks:
            need -= self._strip(self._tracebacks.popitem(last=False)[0])
        if need > 0:
            tb = row[ERROR_TRACEBACK]
            if not tb or tb == TRACEBACK_DROPPED or need > len(tb) - len(TRACEBACK_DROPPED):
                return self._drop(key)
            row[ERROR_TRACEBACK] = TRACEBACK_DROPPED  # then the row fits
            self.tracebacks_dropped += 1
        self.rows[key] = row
        self._note(key, row)
        self._update_room()
        return True

    def _strip(self, key: BufferKey) -> int:
        """Drop a held row's traceback; returns the bytes freed."""
        row = self.rows[key]
        before = self._sizes[key]
        row[ERROR_TRACEBACK] = TRACEBACK_DROPPED
        self.tracebacks_dropped += 1
        self._sizes[key] = after = row_bytes(row)
        self._held_bytes += after - before
        return before - after

    def _note(self, key: BufferKey, row: LogRow) -> None:
        size = row_bytes(row)
        self._sizes[key] = size
        self._held_bytes += size
        if row[STATUS] == RUNNING:
            self._running[key] = None
        tb = row[ERROR_TRACEBACK]
        if tb and tb != TRACEBACK_DROPPED and key not in self._tracebacks:
            self._tracebacks[key] = None

    def _forget(self, key: BufferKey) -> int:
        """Stop tracking a row that leaves ``rows``; returns its size."""
        self._running.pop(key, None)
        self._tracebacks.pop(key, None)
        size = self._sizes.pop(key, None)
        if size is None:  # not measured yet (only when put back merges it)
            return 0
        self._held_bytes -= size
        return size

    def _stop_measuring(self) -> None:
        # Few rows left: as many rows as large as the caps allow fit again.
        self._measuring = False
        self._sizes.clear()
        self._running.clear()
        self._tracebacks.clear()
        self._held_bytes = 0

    def _update_room(self) -> None:
        free = self.max_bytes - self._held_bytes - self._flight_bytes
        by_bytes = len(self._sizes) + max(free, 0) // self.max_row_bytes
        self.room = min(self.max_rows - self._in_flight, by_bytes)

    def _drop(self, key: BufferKey) -> bool:
        if key not in self._dropped_keys:
            self.dropped += 1
            self._dropped_keys[key] = None
            if len(self._dropped_keys) > DROPPED_KEYS_KEPT:
                self._dropped_keys.popitem(last=False)
        return False
