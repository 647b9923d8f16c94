"""``MonitoringMiddleware``: metrics and a durable execution log for every task."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from time import perf_counter, time, time_ns
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError

from exporter.events import EventHub
from exporter.middleware.labels import (
    NO_PARAMS_LABEL,
    RETRIES_LABEL,
    SENT_AT_LABEL,
    attempt_key,
    attempt_of,
    sent_at,
)
from exporter.middleware.runtime import Runtime
from exporter.middleware.sanitize import EMPTY_PARAMS, describe_exception, safe_str
from exporter.processes import worker_host
from exporter.rows import (
    ATTEMPT,
    COMPLETED_AT,
    CREATED_AT,
    DURATION_MS,
    ERROR_MESSAGE,
    ERROR_TRACEBACK,
    FAILED,
    PARAMS,
    PENDING,
    QUEUED_AT,
    RETRIED,
    RUNNING,
    STATUS,
    SUCCESS,
    TASK_ID,
    TASK_NAME,
    TERMINAL,
    absorb,
    log_row,
)
from exporter.settings import ExporterSettings

logger = logging.getLogger(__name__)
# Re-kicked attempts remembered until their post_execute; a process that only sends
# retries (a client re-kicking by hand) would otherwise keep every one.
MAX_REKICKS_HELD = 10_000

# What pre_execute leaves for post_execute, by id(message): the attempt's row as
# it will be stored (RUNNING for now) and the bookkeeping to finish it, in a small
# list indexed by the names below (a class with an __init__ cost as much as the
# rest of the hook's bookkeeping: bench_instructions).
#
# The row is buffered lazily: a task that ends before the writer's next flush
# becomes one row, this very list, finished in place by post_execute (one INSERT
# instead of an INSERT and an UPDATE); one still running at a flush has its row
# buffered then (_BUFFERED), and post_execute finishes the buffered row instead.
_Attempt = list[Any]
_ROW = 0  # the LogRow
_STARTED = 1  # perf_counter() at the start: the duration's clock
_TALLY = 2  # the task name's TaskTally
_KEY = 3  # the attempt's key in the row buffer
_BUFFERED = 4  # whether the row is in the buffer yet


class MonitoringMiddleware(TaskiqMiddleware):
    """Counts, times and logs every task attempt.

    Configure with keyword arguments or ``TASKIQ_EXPORTER_*`` variables
    (see :class:`exporter.settings.ExporterSettings`)::

        broker.add_middlewares(MonitoringMiddleware(database_url="postgresql+asyncpg://..."))

    The hooks only touch memory; a background writer stores rows in batches.
    ``await broker.shutdown()`` returns after every buffered row is written.
    """

    def __init__(
        self,
        *,
        settings: ExporterSettings | None = None,
        hub: EventHub | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(options) - set(ExporterSettings.model_fields))
        if unknown:
            raise TypeError(
                f"MonitoringMiddleware got unknown option(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(ExporterSettings.model_fields))}"
            )
        if settings is None:
            settings = ExporterSettings(**options)
        elif options:
            settings = settings.model_copy(update=options)
        self.settings = settings
        self.runtime = Runtime(settings, hub=hub, before_flush=self.before_flush)
        self.runtime.aggregator.running = self._running_tallies
        self.registry = self.runtime.registry
        self._buffer = self.runtime.buffer
        self._tally = self.runtime.aggregator.task
        self._tallies = self.runtime.aggregator.tasks
        self._params = self.runtime.params
        self._params.find_task = self._task_function
        self._record_pending = settings.record_pending
        self._rows = self._buffer.rows  # the same dict for the buffer's lifetime
        # Keyed by id(message): retry middlewares re-kick with the *same* labels
        # dict, so after on_error the labels already name the next attempt.
        self._active: dict[int, _Attempt] = {}
        self._errors: dict[int, tuple[str, str]] = {}
        # (task_id, attempt) of attempts a retry middleware re-kicked in this
        # process, until their post_execute counts the retry (bounded: a sender
        # that kicks retries it never runs leaves entries behind).
        self._rekicked: dict[tuple[str, int], bool] = {}
        self._host = worker_host()  # with its pid namespace: exporter.processes
        self._pid = os.getpid()
        # Wall-clock time is perf_counter() plus this offset: one clock call per hook
        # instead of two. Read again before every flush, so a stepped wall clock
        # shows within one flush interval.
        self._wall_offset = time() - perf_counter()

    async def startup(self) -> None:
        """Open the store and start the background writer."""
        self._pid = os.getpid()
        self._wall_offset = time() - perf_counter()
        await self.runtime.start()

    async def shutdown(self) -> None:
        """Write every buffered row, then close the store."""
        await self.runtime.stop()

    # The hooks run on every task. They only touch memory: one row per attempt,
    # finished in place when it can be, and the tallies, which the writer applies
    # to the metrics (docs/design.md says why). They are coroutines on purpose:
    # taskiq's maybe_awaitable() checks a plain return value against the
    # Awaitable ABC, which costs more than awaiting.

    def _note_rekick(self, task_id: str, retries: Any) -> None:
        """The attempt before the one being sent was retried."""
        if len(self._rekicked) >= MAX_REKICKS_HELD:
            del self._rekicked[next(iter(self._rekicked))]  # the oldest
        self._rekicked[(task_id, attempt_of(retries) - 1)] = True

    def _encode_params(self, message: TaskiqMessage) -> str:
        args, kwargs = message.args, message.kwargs
        if not args and not kwargs:
            return EMPTY_PARAMS
        return self._params.encode(args, kwargs, message.task_name)

    def _task_function(self, name: str) -> Any:
        """The function behind a task name, if this process knows it (its
        positional arguments are checked under their parameters' names)."""
        task = self.broker.find_task(name) if self.broker is not None else None
        return getattr(task, "original_func", None)

    def _error_redactor(self, message: TaskiqMessage) -> Callable[[str], str]:
        return self._params.error_redactor(message.args, message.kwargs, message.task_name)

    # Client side ---------------------------------------------------------------

    async def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        labels = message.labels
        # Text, not ints: some brokers send labels as headers that take strings
        # only (taskiq-nats through nats-py).
        labels[SENT_AT_LABEL] = str(time_ns() // 1000)
        if not self._record_pending:
            labels[NO_PARAMS_LABEL] = "1"
        elif message.args and self._params.positional(message.task_name) is None:
            # Sent by name from a process that does not know the task: which
            # positional argument is a password is known only in the worker.
            labels[NO_PARAMS_LABEL] = "1"
        return message

    async def post_send(self, message: TaskiqMessage) -> None:
        try:
            name = message.task_name
            tally = self._tallies.get(name) or self._tally(name)
            tally.sent += 1
            labels = message.labels
            task_id = message.task_id
            retries = labels.get(RETRIES_LABEL)
            if retries is not None:
                self._note_rekick(task_id, retries)
            if not self._record_pending:
                return
            # A first attempt's key is its task id (most tasks: no call).
            attempt, key = (1, task_id) if retries is None else attempt_key(task_id, retries)
            sent = sent_at(labels.get(SENT_AT_LABEL)) or time()
            row = self._rows.get(key)
            if row is None:
                params = None if NO_PARAMS_LABEL in labels else self._encode_params(message)
                pending = log_row(
                    task_id, attempt, name, PENDING, params=params, queued_at=sent, created_at=sent
                )
                self._buffer.admit(key, pending)
                return
            # The worker ran it already (an in-place broker) or the writer has not
            # taken the row yet: fill in what only the sender knows.
            if row[QUEUED_AT] is None:
                row[QUEUED_AT] = sent
            if row[PARAMS] is None and NO_PARAMS_LABEL not in labels:
                row[PARAMS] = self._encode_params(message)
        except Exception:
            logger.exception("taskiq-exporter: post_send failed (the task was sent)")

    # Worker side ---------------------------------------------------------------

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        try:
            t0 = perf_counter()
            now = t0 + self._wall_offset
            labels = message.labels
            task_id = message.task_id
            name = message.task_name
            retries = labels.get(RETRIES_LABEL)
            # A first attempt's key is its task id (most tasks: no call).
            attempt, key = (1, task_id) if retries is None else attempt_key(task_id, retries)
            tally = self._tallies.get(name) or self._tally(name)
            tally.started += 1  # in progress: counted from _active when applied
            # The sender's labels are taken off: the task, the other middlewares and
            # the stored result see the labels as they were sent, and every copy
            # taskiq makes of them from here on is cheaper.
            sent = sent_at(labels.pop(SENT_AT_LABEL, None))
            if sent is None:
                created, wait_ms, params_stored = now, None, False
            else:
                # The send time is the attempt's created_at, on both sides: the
                # sender's PENDING row and this one meet on it (on PostgreSQL it
                # is part of the row's key and picks its partition).
                created = sent
                if sent <= now:
                    wait = now - sent
                    tally.waits.append(wait)  # bucketed when the tallies are applied
                    wait_ms = wait * 1000.0
                else:  # the sender's clock is ahead: no wait to measure
                    wait_ms = 0.0
                # The sender wrote the params with its PENDING row.
                params_stored = labels.pop(NO_PARAMS_LABEL, None) is None
            if not params_stored:
                params = self._encode_params(message)
            elif message.args or message.kwargs:
                params = None  # encoded once, by the sender
            else:  # nothing to encode: the row is whole without the sender's
                params = EMPTY_PARAMS
            row = log_row(
                task_id,
                attempt,
                name,
                RUNNING,
                params=params,
                queued_at=sent,
                started_at=now,
                queue_wait_ms=wait_ms,
                worker_host=self._host,
                worker_pid=self._pid,
                created_at=created,
            )
            self._active[id(message)] = [row, t0, tally, key, False]  # see _Attempt
        except Exception:
            logger.exception("taskiq-exporter: pre_execute failed (the task runs anyway)")
        return message

    def before_flush(self) -> None:
        """The writer calls this before each flush: it reads the wall clock's offset
        again, and gives every attempt still running its RUNNING row (so a running
        task shows in the log, and a worker killed mid-task leaves a row for the
        reaper)."""
        self._wall_offset = time() - perf_counter()
        for attempt in self._active.values():
            if not attempt[_BUFFERED]:
                self._buffer_start(attempt)

    def _running_tallies(self) -> list[Any]:
        """One tally per attempt running now (the in-progress gauge)."""
        return [attempt[_TALLY] for attempt in self._active.values()]

    def _buffer_start(self, attempt: _Attempt) -> None:
        """Put an attempt's RUNNING row in the buffer, merged into the row held for
        it if there is one (a PENDING row from a sender in this process). From here
        on the buffer owns that row: post_execute finishes the buffered one."""
        attempt[_BUFFERED] = True
        key, running = attempt[_KEY], attempt[_ROW]
        row = self._rows.get(key)
        if row is None:
            self._buffer.admit(key, running)
        else:
            absorb(row, running)

    async def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        if isinstance(exception, NoResultError):
            return  # the task asked not to store a result: not a failure
        try:
            s = self.settings
            self._errors[id(message)] = describe_exception(
                exception,
                max_message_bytes=s.max_error_message_bytes,
                max_traceback_bytes=s.max_traceback_bytes,
                redact=self._error_redactor(message),
            )
        except Exception:
            logger.exception("taskiq-exporter: on_error failed")

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        end = perf_counter()
        try:
            now = end + self._wall_offset
            task_id = message.task_id
            started = self._active.pop(id(message), None)
            if started is not None and started[_ROW][TASK_ID] == task_id:
                tally = started[_TALLY]
                duration = end - started[_STARTED]
            else:  # pre_execute did not see it (it failed, or another middleware's did)
                started = None
                name = message.task_name
                tally = self._tallies.get(name) or self._tally(name)
                duration = float(result.execution_time)
            error = self._errors.pop(id(message), None) if self._errors else None
            if error is None and result.is_err and not isinstance(result.error, NoResultError):
                text = self._error_redactor(message)(safe_str(result.error))
                error = (text[: self.settings.max_error_message_bytes], "")
            # Durations are bucketed when the tallies are applied.
            if error is None:
                status = SUCCESS
                tally.success += 1
                tally.ok_durations.append(duration)
                error_text = traceback_text = retried = None
            else:
                status = FAILED
                tally.failed += 1
                tally.failed_durations.append(duration)
                error_text, traceback_text = error[0], error[1] or None
                # A retry middleware re-kicked this attempt: it sent the next one
                # from its on_error (post_send noted it), and by default also
                # replaced the error with NoResultError (taskiq's SimpleRetry and
                # SmartRetry; not with no_result_on_retry=False).
                if self._rekicked:
                    # The labels may name the next attempt already (the retry
                    # middleware updates them in place): pre_execute's row knows.
                    number = (
                        started[_ROW][ATTEMPT]
                        if started is not None
                        else attempt_of(message.labels.get(RETRIES_LABEL))
                    )
                    rekicked = self._rekicked.pop((task_id, number), False)
                else:
                    rekicked = False
                retried = rekicked or isinstance(result.error, NoResultError)
                if retried:
                    tally.retries += 1
            rows = self._rows
            if started is None:
                attempt, key = attempt_key(task_id, message.labels.get(RETRIES_LABEL))
                created = now
                row = rows.get(key)
            else:
                key = started[_KEY]
                row = rows.get(key)
                if not started[_BUFFERED]:
                    if row is None:
                        # Started and finished between two flushes: its one row is
                        # the RUNNING row, finished in place.
                        row = started[_ROW]
                        row[STATUS] = status
                        row[COMPLETED_AT] = now
                        row[DURATION_MS] = duration * 1000.0
                        if error is not None:
                            row[ERROR_MESSAGE] = error_text
                            row[ERROR_TRACEBACK] = traceback_text
                            row[RETRIED] = retried
                        if len(rows) < self._buffer.room:  # RowBuffer.admit, inlined
                            rows[key] = row
                        elif not self._buffer.admit(key, row):
                            tally.fold()  # nothing applies the tallies meanwhile
                        return
                    self._buffer_start(started)  # merged into the row held for it
                running = started[_ROW]
                attempt, name, created = running[ATTEMPT], running[TASK_NAME], running[CREATED_AT]
            if row is None:
                # The writer took the RUNNING row already: the store merges.
                finished = log_row(
                    task_id,
                    attempt,
                    name,
                    status,
                    completed_at=now,
                    duration_ms=duration * 1000.0,
                    error_message=error_text,
                    error_traceback=traceback_text,
                    worker_host=self._host,
                    worker_pid=self._pid,
                    retried=retried,
                    created_at=created,
                )
                if not self._buffer.admit(key, finished):
                    tally.fold()
                return
            row[COMPLETED_AT] = now
            row[DURATION_MS] = duration * 1000.0
            if error is not None:
                row[ERROR_MESSAGE], row[ERROR_TRACEBACK] = error_text, traceback_text
                row[RETRIED] = retried
            if row[STATUS] not in TERMINAL:
                row[STATUS] = status
        except Exception:
            logger.exception("taskiq-exporter: post_execute failed (the task has finished)")
