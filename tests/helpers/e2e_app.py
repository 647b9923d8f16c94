"""The end-to-end workload as a taskiq app: ``taskiq worker tests.helpers.e2e_app:broker``.

Configured from the environment, as a production app would be:

* ``E2E_BROKER``: ``redis`` (taskiq-redis ``ListQueueBroker``, the default) or
  ``rabbitmq`` (taskiq-aio-pika); ``TEST_QUEUE`` names the queue,
  ``TEST_REDIS_URL`` and ``TEST_AMQP_URL`` the servers.
* ``E2E_MIDDLEWARE``: ``exporter`` (the default: ``MonitoringMiddleware``, set up
  by ``TASKIQ_EXPORTER_*``), ``taskiq-prometheus`` (taskiq's own
  ``PrometheusMiddleware`` on ``E2E_PROMETHEUS_PORT``) or ``none``. Retries
  (``SimpleRetryMiddleware``) are always on, before the monitoring middleware.
* ``E2E_TASK_NAMES``: how many task names the work is spread over (10).
* ``E2E_STATS_DIR``: each worker process writes there, at shutdown, when it
  finished each task and, now and then, its CPU time, and while it runs how many
  tasks it has finished (the throughput benchmark reads both).

``python -m tests.helpers.e2e_app send START STOP`` sends tasks START..STOP
(see e2e_workload for what each one does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from time import process_time, time
from typing import Any

from taskiq import AsyncBroker, Context, TaskiqDepends, TaskiqEvents, TaskiqMiddleware
from taskiq.middlewares import SimpleRetryMiddleware

from tests.helpers import e2e_workload as w

TASK_NAMES = int(os.environ.get("E2E_TASK_NAMES", "10"))


class RetryableError(Exception):
    pass


class FatalError(Exception):
    pass


def _broker() -> AsyncBroker:
    queue = os.environ.get("TEST_QUEUE", "taskiq-exporter-e2e")
    if os.environ.get("E2E_BROKER", "redis") == "rabbitmq":
        # Imported here: the Redis runs need no RabbitMQ client.
        from pamqp.common import FieldTable
        from taskiq_aio_pika import AioPikaBroker, Exchange, Queue, QueueType

        # Classic queues that RabbitMQ deletes ten minutes after their last use,
        # so test runs leave nothing behind.
        expires: FieldTable = {"x-expires": 600_000}
        return AioPikaBroker(
            os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
            exchange=Exchange(name=queue, auto_delete=True, durable=False),
            task_queues=[
                Queue(name=queue, type=QueueType.CLASSIC, durable=False, arguments=expires)
            ],
            dead_letter_queue=Queue(
                name=f"{queue}.dead", type=QueueType.CLASSIC, durable=False, arguments=expires
            ),
        )
    from taskiq_redis import ListQueueBroker

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    # redis-py 8 reads with a 5 s socket timeout by default: an idle worker's BRPOP
    # ends in TimeoutError, the process dies and taskiq starts a new one
    # (taskiq-python/taskiq-redis#127). A benchmark's idle group did exactly that
    # between its bursts, so its workers met every task name anew in each burst.
    return ListQueueBroker(url, queue_name=queue, socket_timeout=None)


def _monitoring() -> list[TaskiqMiddleware]:
    # Imported only when chosen: the bare and taskiq-prometheus runs must not
    # pay for (or be configured by) the exporter's imports.
    mode = os.environ.get("E2E_MIDDLEWARE", "exporter")
    if mode == "exporter":
        from exporter import MonitoringMiddleware

        return [MonitoringMiddleware()]
    if mode == "taskiq-prometheus":
        from taskiq.middlewares.prometheus_middleware import PrometheusMiddleware

        directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", "/tmp/taskiq_worker"))
        port = int(os.environ.get("E2E_PROMETHEUS_PORT", "9000"))
        return [
            PrometheusMiddleware(metrics_path=directory, server_port=port, server_addr="127.0.0.1")
        ]
    if mode == "none":
        return []
    raise ValueError(f"E2E_MIDDLEWARE must be exporter, taskiq-prometheus or none, not {mode!r}")


broker = _broker().with_middlewares(
    SimpleRetryMiddleware(
        default_retry_count=w.RETRY_COUNT,
        default_retry_label=True,
        types_of_exceptions=(RetryableError,),
    ),
    *_monitoring(),
)

# When each task of this process finished (wall clock), and every 32nd time the
# process's CPU time (a system call of a few microseconds: too dear for every task).
CPU_EVERY = 32
_finished: list[float] = []
_cpu: list[tuple[int, float]] = []


def _record() -> None:
    if len(_finished) % CPU_EVERY == 0:
        _cpu.append((len(_finished), process_time()))
    _finished.append(time())


CONTEXT: Any = TaskiqDepends()


async def work(i: int, sleep_ms: int = 0, payload: str = "", context: Context = CONTEXT) -> int:
    try:
        if sleep_ms:
            await asyncio.sleep(sleep_ms / 1000)
        kind = w.kind(i)
        if kind == w.RETRIED or (kind == w.FLAKY and "_retries" not in context.message.labels):
            raise RetryableError(f"task {i} failed (attempt will be retried)")
        if kind == w.FATAL:
            raise FatalError(f"task {i} failed for good")
        return i
    finally:
        _record()


TASKS = {
    name: broker.register_task(work, task_name=name)
    for name in sorted({w.task_name(i, TASK_NAMES) for i in range(7 * TASK_NAMES)})
}


# How many tasks this process has finished, in E2E_STATS_DIR/<pid>.progress every
# PROGRESS_SECONDS: the throughput benchmark waits on it, for every configuration
# alike (an empty queue says little: the workers prefetch it).
PROGRESS_SECONDS = 0.02
_progress: list[asyncio.Task[None]] = []


def _write_progress(directory: str) -> None:
    path = Path(directory, f"{os.getpid()}.progress")
    staged = path.with_suffix(".tmp")
    staged.write_text(str(len(_finished)))
    staged.replace(path)


async def _report_progress(directory: str) -> None:
    written = -1
    while True:
        if len(_finished) != written:
            written = len(_finished)
            _write_progress(directory)
        await asyncio.sleep(PROGRESS_SECONDS)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _start_progress(_state: Any) -> None:
    directory = os.environ.get("E2E_STATS_DIR")
    if directory:
        _progress.append(asyncio.create_task(_report_progress(directory)))


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _write_stats(_state: Any) -> None:
    for task in _progress:
        task.cancel()
    directory = os.environ.get("E2E_STATS_DIR")
    if directory:
        _write_progress(directory)
        stats = {"finished": _finished, "cpu": _cpu}
        Path(directory, f"{os.getpid()}.json").write_text(json.dumps(stats))


async def send(start: int, stop: int, *, sleep: bool, payload_bytes: int, concurrency: int) -> None:
    payload = "x" * payload_bytes
    await broker.startup()
    try:
        pending: list[Any] = []
        for i in range(start, stop):
            task = TASKS[w.task_name(i, TASK_NAMES)]
            pending.append(task.kiq(i, w.sleep_ms(i) if sleep else 0, payload))
            if len(pending) >= concurrency:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description="send tasks START..STOP of the e2e workload")
    parser.add_argument("command", choices=["send"])
    parser.add_argument("start", type=int)
    parser.add_argument("stop", type=int)
    parser.add_argument("--no-sleep", action="store_true", help="every task returns at once")
    parser.add_argument("--payload-bytes", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(
        send(
            args.start,
            args.stop,
            sleep=not args.no_sleep,
            payload_bytes=args.payload_bytes,
            concurrency=args.concurrency,
        )
    )


if __name__ == "__main__":
    main()
