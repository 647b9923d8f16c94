"""The Prometheus instruments of one process, created in a given registry."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.registry import CollectorRegistry

from exporter.metrics import names as n

TASK = (n.LABEL_TASK_NAME,)
TASK_STATUS = (n.LABEL_TASK_NAME, n.LABEL_STATUS)
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Instruments:
    """Every metric the middleware exports. Gauges say how to combine processes:
    ``livesum`` so that a dead worker's values stop counting."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        duration_buckets: Sequence[float],
        queue_wait_buckets: Sequence[float],
    ) -> None:
        self.sent = Counter(n.TASKS_SENT, "Tasks sent by clients.", TASK, registry=registry)
        self.started = Counter(
            n.TASKS_STARTED, "Task attempts started by workers.", TASK, registry=registry
        )
        self.completed = Counter(
            n.TASKS_COMPLETED,
            "Task attempts finished, by status (success or failed).",
            TASK_STATUS,
            registry=registry,
        )
        self.retries = Counter(
            n.TASK_RETRIES, "Failed attempts that were retried.", TASK, registry=registry
        )
        self.duration = Histogram(
            n.TASK_DURATION,
            "Wall time of an attempt in the worker, by status.",
            TASK_STATUS,
            buckets=duration_buckets,
            registry=registry,
        )
        self.queue_wait = Histogram(
            n.TASK_QUEUE_WAIT,
            "Time from send to start of an attempt.",
            TASK,
            buckets=queue_wait_buckets,
            registry=registry,
        )
        self.in_progress = Gauge(
            n.TASKS_IN_PROGRESS,
            "Attempts running now.",
            TASK,
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.rows_written = Counter(
            n.LOG_ROWS_WRITTEN, "Execution log rows written.", registry=registry
        )
        self.rows_dropped = Counter(
            n.LOG_ROWS_DROPPED,
            "Execution log rows dropped because the buffer was full.",
            registry=registry,
        )
        self.tracebacks_dropped = Counter(
            n.LOG_TRACEBACKS_DROPPED,
            "Tracebacks left out of failed attempts' log rows because the buffer was full.",
            registry=registry,
        )
        self.write_errors = Counter(
            n.LOG_WRITE_ERRORS, "Failed attempts to write a batch of log rows.", registry=registry
        )
        self.buffer_rows = Gauge(
            n.LOG_BUFFER_ROWS,
            "Log rows waiting to be written.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.flush_seconds = Histogram(
            n.LOG_FLUSH_SECONDS,
            "Time to write one batch of log rows.",
            buckets=FLUSH_BUCKETS,
            registry=registry,
        )
        self.duration_bounds = tuple(float(b) for b in duration_buckets)
        self.queue_wait_bounds = tuple(float(b) for b in queue_wait_buckets)
