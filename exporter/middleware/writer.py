"""The background writer: drains the row buffer in batches, off the tasks' path.

It retries with backoff while the database is slow or down (the buffer's bound
decides what is kept meanwhile), sets aside rows the database refuses one by
one so that one bad row never blocks the others, and applies the metric
tallies about once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.exc import DataError, IntegrityError

from exporter.metrics.aggregator import Aggregator
from exporter.metrics.instruments import Instruments
from exporter.middleware.buffer import RowBuffer
from exporter.rows import LogRow
from exporter.store.row_batches import RowStore

logger = logging.getLogger(__name__)


def _is_data_error(exc: BaseException) -> bool:
    """The database refused these values (not: could not be reached, or the schema
    is missing: those keep the rows for the next try). SQLAlchemy's classes, or
    the driver's SQLSTATE classes 22 (data exception) and 23 (integrity)."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    return str(getattr(exc, "sqlstate", "") or "")[:2] in ("22", "23")


class BackgroundWriter:
    def __init__(
        self,
        buffer: RowBuffer,
        store: RowStore,
        instruments: Instruments,
        aggregator: Aggregator,
        *,
        flush_interval: float,
        batch_size: int,
        metrics_interval: float,
        backoff_initial: float,
        backoff_max: float,
        on_tick: Callable[[], None] | None = None,
        before_flush: Callable[[], None] | None = None,
    ) -> None:
        self.buffer = buffer
        self.store = store
        self.instruments = instruments
        self.aggregator = aggregator
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.metrics_interval = metrics_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.on_tick = on_tick
        # Called before each flush: the hooks buffer what they left for later (the
        # RUNNING rows of attempts still running).
        self.before_flush = before_flush
        self.failures = 0
        self._dropped_reported = 0
        self._tracebacks_reported = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._last_error_log = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="taskiq-exporter-writer")

    async def _run(self) -> None:
        now = time.monotonic()
        next_flush = now + self.flush_interval
        next_metrics = now + self.metrics_interval
        backoff = self.backoff_initial
        while not self._stopping:
            wait = min(next_flush, next_metrics) - time.monotonic()
            if wait > 0:
                # stop() sets the event: a long flush interval never delays shutdown.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                if self._stopping:
                    break
            if time.monotonic() >= next_flush:
                self._collect()
                if self.buffer.rows:
                    if await self.flush_once():
                        backoff = self.backoff_initial
                    else:
                        backoff = min(backoff * 2, self.backoff_max)
                full = len(self.buffer.rows) >= self.batch_size and not self.failures
                pause = 0.0 if full else (backoff if self.failures else self.flush_interval)
                next_flush = time.monotonic() + pause
            if time.monotonic() >= next_metrics:
                next_metrics = time.monotonic() + self.metrics_interval
                self.apply_metrics()

    def _collect(self) -> None:
        if self.before_flush is not None:
            try:
                self.before_flush()
            except Exception:
                logger.exception("taskiq-exporter: buffering the running attempts failed")

    def apply_metrics(self) -> None:
        try:
            self.aggregator.apply()
            inst = self.instruments
            inst.buffer_rows.set(len(self.buffer))
            dropped = self.buffer.dropped - self._dropped_reported
            if dropped:
                inst.rows_dropped.inc(dropped)
                self._dropped_reported += dropped
            stripped = self.buffer.tracebacks_dropped - self._tracebacks_reported
            if stripped:
                inst.tracebacks_dropped.inc(stripped)
                self._tracebacks_reported += stripped
            if self.on_tick is not None:
                self.on_tick()
        except Exception:
            logger.exception("taskiq-exporter: updating metrics failed")

    async def flush_once(self) -> bool:
        """Write one batch. False when it could not be written (it stays buffered)."""
        batch = self.buffer.take(self.batch_size)
        if not batch:
            return True
        started = time.perf_counter()
        try:
            await self.store.write(batch, datetime.now(UTC))
        except asyncio.CancelledError:
            self.buffer.settle(batch, written=False)
            raise
        except Exception as exc:
            self.instruments.write_errors.inc()
            if _is_data_error(exc):
                await self._write_one_by_one(batch)
                return True
            self.buffer.settle(batch, written=False)
            self.failures += 1
            self._log_failure(getattr(exc, "orig", None) or exc)
            return False
        self.buffer.settle(batch, written=True)
        self.instruments.flush_seconds.observe(time.perf_counter() - started)
        self.instruments.rows_written.inc(len(batch))
        if self.failures:
            logger.warning("taskiq-exporter: log writes recovered after %d failures", self.failures)
        self.failures = 0
        return True

    async def _write_one_by_one(self, batch: list[LogRow]) -> None:
        # The batch stays in flight, counted against the buffer's bound, until done.
        retry: list[LogRow] = []
        done = 0
        try:
            for row in batch:
                try:
                    await self.store.write([row], datetime.now(UTC))
                    self.instruments.rows_written.inc()
                except Exception as exc:
                    self.instruments.write_errors.inc()
                    if not _is_data_error(exc):
                        retry.append(row)  # the database went away meanwhile: try again
                    else:
                        self.buffer.dropped += 1
                        logger.error(
                            "taskiq-exporter: the database refused the row of task %s "
                            "attempt %s: %s",
                            row[0],
                            row[1],
                            getattr(exc, "orig", None) or exc,
                        )
                done += 1
        finally:
            self.buffer.settle(batch, written=True)
            self.buffer.put_back(retry + batch[done:])  # batch[done:]: cancelled

    def _log_failure(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.failures == 1 or now - self._last_error_log > 30:
            self._last_error_log = now
            logger.warning(
                "taskiq-exporter: writing the execution log failed (%d in a row, %d rows "
                "buffered, tasks are not affected): %s",
                self.failures,
                len(self.buffer),
                exc,
            )

    async def stop(self, drain_seconds: float) -> None:
        """Stop the loop, then write every buffered row, for at most ``drain_seconds``
        in all. What is left then, or when the caller cancels the shutdown (taskiq's
        --shutdown-timeout), is counted as dropped and logged."""
        deadline = time.monotonic() + drain_seconds
        self._stopping = True
        self._wake.set()
        try:
            if self._task is not None:
                # On timeout wait_for cancels it; its batch goes back to the buffer.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._task, timeout=drain_seconds)
            self._collect()
            backoff = self.backoff_initial
            while self.buffer.rows and (left := deadline - time.monotonic()) > 0:
                try:
                    written = await asyncio.wait_for(self.flush_once(), timeout=left)
                except TimeoutError:
                    break
                if not written:
                    await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                    backoff = min(backoff * 2, self.backoff_max)
        finally:
            self._count_lost()

    def _count_lost(self) -> None:
        lost = len(self.buffer.rows) + self.buffer.in_flight
        if lost:
            self.buffer.dropped += lost
            logger.error(
                "taskiq-exporter: %d execution log rows could not be written before shutdown",
                lost,
            )
        self.apply_metrics()
