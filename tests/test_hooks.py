"""The middleware's hooks (pre_send, post_send, pre_execute, on_error, post_execute)
called directly: what they leave in the buffer and the tallies, and the bounds
they keep while nothing is written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from taskiq import TaskiqMessage, TaskiqResult

from exporter import MonitoringMiddleware
from exporter.middleware.buffer import TRACEBACK_DROPPED, row_bytes
from exporter.middleware.labels import SENT_AT_LABEL
from exporter.rows import (
    CREATED_AT,
    PARAMS,
    QUEUE_WAIT_MS,
    QUEUED_AT,
    STARTED_AT,
    STATUS,
    WORKER_PID,
)
from exporter.store.engine import make_engine
from exporter.store.models import TaskExecutionLog
from tests.helpers.middleware import sample

MiB = 2**20
UNUSED = "sqlite+aiosqlite:///unused.sqlite3"  # never opened: no startup()
OK: TaskiqResult[None] = TaskiqResult(is_err=False, return_value=None, execution_time=0.0)


def message(
    task_id: str, task_name: str = "n", labels: dict[str, Any] | None = None
) -> TaskiqMessage:
    return TaskiqMessage(
        task_id=task_id, task_name=task_name, labels=labels or {}, args=[], kwargs={}
    )


async def test_the_hooks_count_rows_in_flight_against_the_bound() -> None:
    """The hooks test the bound inline (no call): rows the writer holds count too."""
    mw = MonitoringMiddleware(database_url=UNUSED, max_buffer_rows=2)
    for task_id in ("a", "b"):
        done = message(task_id)
        await mw.pre_execute(done)
        await mw.post_execute(done, OK)
    batch = mw.runtime.buffer.take(10)  # the writer holds both
    assert len(batch) == 2
    late = message("c")
    await mw.pre_execute(late)
    await mw.post_execute(late, OK)
    assert mw.runtime.buffer.rows == {}
    assert mw.runtime.buffer.dropped == 1  # one attempt lost, counted once
    mw.runtime.buffer.settle(batch, written=True)
    running = message("d")
    await mw.pre_execute(running)
    mw.before_flush()  # what the writer does before a flush
    assert list(mw.runtime.buffer.rows) == ["d"]
    assert mw.runtime.buffer.rows["d"][STATUS] == "running"


async def test_a_running_attempt_merges_into_the_pending_row_its_sender_holds() -> None:
    """Sender and worker in one process (a broker that does not run in place): the
    writer's before_flush() turns the held PENDING row into the RUNNING one."""
    mw = MonitoringMiddleware(database_url=UNUSED)
    msg = TaskiqMessage(task_id="p", task_name="n", labels={}, args=[7], kwargs={})
    await mw.pre_send(msg)
    await mw.post_send(msg)
    (held,) = mw.runtime.buffer.rows.values()
    assert held[STATUS] == "pending"
    await mw.pre_execute(msg)
    mw.before_flush()
    assert list(mw.runtime.buffer.rows.values()) == [held]  # the same row, merged
    assert held[STATUS] == "running"
    assert held[STARTED_AT] is not None
    assert held[WORKER_PID] is not None
    assert held[QUEUED_AT] <= held[STARTED_AT]
    assert held[CREATED_AT] == held[QUEUED_AT]
    assert held[PARAMS] == '{"args":[7],"kwargs":{}}'


async def test_a_worker_behind_the_senders_clock_keeps_the_send_time_as_created_at() -> None:
    """The send time is the attempt's created_at on both sides, whatever the clocks:
    on PostgreSQL it is part of the row's key, so the sender's PENDING row and the
    worker's rows meet only on it. The queue wait, which it cannot measure, is 0."""
    mw = MonitoringMiddleware(database_url=UNUSED)
    ahead_us = (int(time.time()) + 3600) * 1_000_000  # the sender's clock, an hour ahead
    msg = message("skewed", labels={SENT_AT_LABEL: ahead_us})
    await mw.pre_execute(msg)
    mw.before_flush()
    (row,) = mw.runtime.buffer.rows.values()
    assert row[CREATED_AT] == row[QUEUED_AT] == ahead_us / 1e6
    assert row[QUEUE_WAIT_MS] == 0.0
    assert row[STARTED_AT] < row[CREATED_AT]


async def test_observations_wait_for_the_tallies_but_stay_bounded_while_rows_are_refused() -> None:
    """The hooks append durations and queue waits to lists that the writer's
    apply buckets; with no writer and a full buffer, each refused row folds them."""
    mw = MonitoringMiddleware(database_url=UNUSED, max_buffer_rows=3)
    for i in range(10):
        msg = message(f"t{i}", labels={SENT_AT_LABEL: 1})
        await mw.pre_execute(msg)
        await mw.post_execute(msg, OK)
    tally = mw.runtime.aggregator.tasks["n"]
    assert len(tally.ok_durations) <= 3
    assert len(tally.waits) <= 3
    assert mw.runtime.buffer.dropped == 7
    mw.runtime.aggregator.apply()
    assert tally.ok_durations == []
    assert tally.waits == []
    assert sample(mw, "taskiq_task_duration_seconds_count", task_name="n", status="success") == 10
    assert sample(mw, "taskiq_task_queue_wait_seconds_count", task_name="n") == 10
    # Sent at the epoch's first microsecond: every wait is in the +Inf bucket only.
    assert sample(mw, "taskiq_task_queue_wait_seconds_bucket", task_name="n", le="+Inf") == 10
    assert sample(mw, "taskiq_task_queue_wait_seconds_sum", task_name="n") > 1e9


async def test_the_in_progress_gauge_counts_the_attempts_running_when_applied() -> None:
    mw = MonitoringMiddleware(database_url=UNUSED)
    msgs = [message(f"r{i}", name) for i, name in enumerate(("a", "a", "b"))]
    for msg in msgs:
        await mw.pre_execute(msg)

    def in_progress(name: str) -> float:
        mw.runtime.aggregator.apply()
        return sample(mw, "taskiq_tasks_in_progress", task_name=name)

    assert (in_progress("a"), in_progress("b")) == (2, 1)
    await mw.post_execute(msgs[0], OK)
    await mw.post_execute(msgs[2], OK)
    assert (in_progress("a"), in_progress("b")) == (1, 0)


async def test_a_worker_leaves_params_to_the_sender_unless_there_are_none() -> None:
    """A message stamped by a sender with this middleware: its PENDING row carries the
    params, so the worker's row does not encode them again; a task without
    arguments still gets whole rows from the worker alone (if the sender's row is
    lost, or its process has no store)."""
    mw = MonitoringMiddleware(database_url=UNUSED)
    for task_id, args in (("no-args", []), ("args", [7])):
        msg = TaskiqMessage(
            task_id=task_id, task_name="n", labels={SENT_AT_LABEL: 1}, args=args, kwargs={}
        )
        await mw.pre_execute(msg)
        await mw.post_execute(msg, OK)
    rows = mw.runtime.buffer.rows
    assert rows["no-args"][PARAMS] == '{"args":[],"kwargs":{}}'
    assert rows["args"][PARAMS] is None


async def test_the_hooks_lose_tracebacks_not_rows_and_the_counts_add_up(tmp_path: Path) -> None:
    """Failed attempts with long tracebacks while nothing is written (a 1 h flush
    interval): the buffer stays within its bytes, every attempt is stored or counted
    as dropped, and the stripped tracebacks are counted."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    mw = MonitoringMiddleware(database_url=db, max_buffer_bytes=MiB, flush_interval_seconds=3600)
    await mw.startup()
    buf = mw.runtime.buffer

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        raise ValueError("boom")

    attempts = 2_500
    failed: TaskiqResult[None] = TaskiqResult(is_err=True, return_value=None, execution_time=0.0)
    try:
        for i in range(attempts):
            msg = message(f"f{i}")
            await mw.pre_execute(msg)
            try:
                deep(300)
            except ValueError as exc:
                failed.error = exc
                await mw.on_error(msg, failed, exc)
            await mw.post_execute(msg, failed)
            assert sum(map(row_bytes, buf.rows.values())) <= MiB
    finally:
        await mw.shutdown()
    assert buf.tracebacks_dropped > 0
    assert buf.dropped > 0
    engine = make_engine(db)
    try:
        async with engine.connect() as conn:
            stored = (await conn.execute(select(func.count(TaskExecutionLog.id)))).scalar_one()
            marked = (await conn.execute(
                select(func.count(TaskExecutionLog.id)).where(
                    TaskExecutionLog.error_traceback == TRACEBACK_DROPPED
                )
            )).scalar_one()  # fmt: skip
    finally:
        await engine.dispose()
    assert stored + buf.dropped == attempts
    assert marked == buf.tracebacks_dropped
    assert sample(mw, "taskiq_exporter_log_rows_dropped_total") == buf.dropped
    assert sample(mw, "taskiq_exporter_log_tracebacks_dropped_total") == buf.tracebacks_dropped
