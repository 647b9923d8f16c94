"""``MonitoringMiddleware``: metrics and a durable execution log for every task."""

from __future__ import annotations

import logging
import os
import socket
from time import perf_counter, time
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError

from exporter.events import EventHub
from exporter.middleware.rows import (
    COMPLETED_AT,
    CREATED_AT,
    DURATION_MS,
    ERROR_MESSAGE,
    ERROR_TRACEBACK,
    FAILED,
    PARAMS,
    QUEUE_WAIT_MS,
    QUEUED_AT,
    RUNNING,
    STARTED_AT,
    SUCCESS,
    WORKER_HOST,
    WORKER_PID,
    advance,
)
from exporter.middleware.runtime import Runtime
from exporter.middleware.sanitize import describe_exception, safe_str
from exporter.settings import ExporterSettings

SENT_AT_LABEL = "_taskiq_exporter_sent_at"
PARAMS_STORED = "p"
RETRIES_LABEL = "_retries"

logger = logging.getLogger(__name__)


def _attempt(labels: dict[str, Any]) -> int:
    retries = labels.get(RETRIES_LABEL)
    if retries is None:
        return 1
    try:
        return int(retries) + 1
    except (TypeError, ValueError):
        return 1


def _sent_at(labels: dict[str, Any]) -> tuple[float | None, bool]:
    """When the message was sent, and whether the sender stored its params (the
    label then ends with "p": the worker need not encode large arguments again)."""
    value = labels.get(SENT_AT_LABEL)
    if value is None:
        return None, False
    stored = isinstance(value, str) and value.endswith(PARAMS_STORED)
    try:
        return float(value[:-1] if stored else value), stored
    except (TypeError, ValueError):
        return None, False


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
        self.runtime = Runtime(settings, hub=hub)
        self.registry = self.runtime.registry
        self._buffer = self.runtime.buffer
        self._tally = self.runtime.aggregator.task
        self._tallies = self.runtime.aggregator.tasks
        self._params = self.runtime.params
        self._record_pending = settings.record_pending
        self._sent_suffix = PARAMS_STORED if settings.record_pending else ""
        # Keyed by id(message): retry middlewares re-kick with the *same* labels
        # dict, so after on_error the labels already name the next attempt.
        # id(message) -> (task_id, attempt, perf_counter at start, created_at)
        self._active: dict[int, tuple[str, int, float, float]] = {}
        self._errors: dict[int, tuple[str, str]] = {}
        self._host = socket.gethostname()
        self._pid = os.getpid()

    async def startup(self) -> None:
        """Open the store and start the background writer."""
        self._pid = os.getpid()
        await self.runtime.start()

    async def shutdown(self) -> None:
        """Write every buffered row, then close the store."""
        await self.runtime.stop()

    # The hooks are coroutines on purpose: taskiq's maybe_awaitable() checks a
    # plain return value against the Awaitable ABC, which costs more than
    # awaiting a coroutine.

    # Client side ---------------------------------------------------------------

    async def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        message.labels[SENT_AT_LABEL] = repr(time()) + self._sent_suffix
        return message

    async def post_send(self, message: TaskiqMessage) -> None:
        try:
            labels = message.labels
            sent = _sent_at(labels)[0] or time()
            name = message.task_name
            tally = self._tallies.get(name) or self._tally(name)
            tally.sent += 1
            if not self._record_pending:
                return
            row = self._buffer.row(message.task_id, _attempt(labels), name, sent)
            if row is not None:
                if row[QUEUED_AT] is None:
                    row[QUEUED_AT] = sent
                # The worker leaves params to the sender (see _sent_at), even when
                # it ran the task before this hook (in-place brokers).
                if row[PARAMS] is None:
                    row[PARAMS] = self._params.encode(message.args, message.kwargs)
        except Exception:
            logger.exception("taskiq-exporter: post_send failed (the task was sent)")

    # Worker side ---------------------------------------------------------------

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        try:
            now = time()
            labels = message.labels
            name = message.task_name
            attempt = _attempt(labels)
            sent, params_stored = _sent_at(labels)
            tally = self._tallies.get(name) or self._tally(name)
            tally.started += 1
            tally.in_progress += 1
            created = now
            if sent is not None and sent <= now:
                created = sent
                tally.queue_wait.observe(now - sent)
            row = self._buffer.row(message.task_id, attempt, name, created)
            self._active[id(message)] = (message.task_id, attempt, perf_counter(), created)
            if row is not None:
                if created < row[CREATED_AT]:
                    row[CREATED_AT] = created
                row[STARTED_AT] = now
                if sent is not None:
                    row[QUEUED_AT] = sent
                    row[QUEUE_WAIT_MS] = (now - created) * 1000.0
                row[WORKER_HOST] = self._host
                row[WORKER_PID] = self._pid
                if row[PARAMS] is None and not params_stored:
                    row[PARAMS] = self._params.encode(message.args, message.kwargs)
                advance(row, RUNNING)
        except Exception:
            logger.exception("taskiq-exporter: pre_execute failed (the task runs anyway)")
        return message

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
            )
        except Exception:
            logger.exception("taskiq-exporter: on_error failed")

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        end = perf_counter()
        try:
            now = time()
            name = message.task_name
            state = self._active.pop(id(message), None)
            if state is not None and state[0] == message.task_id:
                attempt, duration, created = state[1], end - state[2], state[3]
            else:
                state = None
                attempt = _attempt(message.labels)
                duration, created = float(result.execution_time), now
            error = self._errors.pop(id(message), None) if self._errors else None
            if error is None and result.is_err and not isinstance(result.error, NoResultError):
                error = (safe_str(result.error)[: self.settings.max_error_message_bytes], "")
            tally = self._tallies.get(name) or self._tally(name)
            if error is None:
                status = SUCCESS
                tally.success += 1
            else:
                status = FAILED
                tally.failed += 1
                # Retry middlewares replace the error with NoResultError on the
                # attempt they re-kick (taskiq's SimpleRetry and SmartRetry).
                if isinstance(result.error, NoResultError):
                    tally.retries += 1
            tally.duration[status].observe(duration)
            if state is not None:
                tally.in_progress -= 1
            row = self._buffer.row(message.task_id, attempt, name, created)
            if row is not None:
                row[COMPLETED_AT] = now
                row[DURATION_MS] = duration * 1000.0
                if error is not None:
                    row[ERROR_MESSAGE], row[ERROR_TRACEBACK] = error[0], error[1] or None
                advance(row, status)
        except Exception:
            logger.exception("taskiq-exporter: post_execute failed (the task has finished)")
