"""The bounded buffer between the hooks and the writer."""

from __future__ import annotations

from pathlib import Path

from exporter.middleware.buffer import (
    DROPPED_KEYS_KEPT,
    TRACEBACK_DROPPED,
    RowBuffer,
    row_bytes,
)
from exporter.middleware.rows import (
    COMPLETED_AT,
    CREATED_AT,
    ERROR_MESSAGE,
    ERROR_TRACEBACK,
    PARAMS,
    STARTED_AT,
    STATUS,
    LogRow,
    advance,
    new_row,
)

MiB = 2**20


def test_start_and_end_in_one_window_are_one_row() -> None:
    buf = RowBuffer(10)
    row = buf.row("t1", 1, "app:task", 100.0)
    assert row is not None
    row[STARTED_AT] = 101.0
    advance(row, "running")
    again = buf.row("t1", 1, "app:task", 100.0)
    assert again is row
    again[COMPLETED_AT] = 102.0
    advance(again, "success")
    batch = buf.take(100)
    assert len(batch) == 1
    assert batch[0][STATUS] == "success"
    assert batch[0][STARTED_AT] == 101.0


def test_status_never_goes_back_and_terminal_is_final() -> None:
    row = RowBuffer(1).row("t", 1, "n", 0.0)
    assert row is not None
    advance(row, "success")
    advance(row, "running")
    advance(row, "failed")
    assert row[STATUS] == "success"


def test_rows_beyond_the_bound_are_dropped_and_counted() -> None:
    buf = RowBuffer(3)
    kept = [buf.row(f"t{i}", 1, "n", 0.0) for i in range(5)]
    assert [r is not None for r in kept] == [True, True, True, False, False]
    assert buf.dropped == 2
    # Updates to rows already held are always accepted.
    assert buf.row("t0", 1, "n", 0.0) is kept[0]
    assert buf.dropped == 2


def test_in_flight_rows_count_against_the_bound() -> None:
    buf = RowBuffer(2)
    buf.row("a", 1, "n", 0.0)
    buf.row("b", 1, "n", 0.0)
    batch = buf.take(10)
    assert len(buf) == 2
    assert buf.row("c", 1, "n", 0.0) is None
    buf.settle(batch, written=True)
    assert len(buf) == 0
    assert buf.row("c", 1, "n", 0.0) is not None


def test_a_failed_batch_goes_back_merged_with_newer_updates() -> None:
    buf = RowBuffer(10)
    row = buf.row("t", 1, "n", 50.0)
    assert row is not None
    advance(row, "running")
    row[STARTED_AT] = 51.0
    batch = buf.take(10)
    # Meanwhile the task finished: a new buffered row for the same attempt.
    newer = buf.row("t", 1, "n", 60.0)
    assert newer is not None
    newer[COMPLETED_AT] = 70.0
    advance(newer, "success")
    buf.settle(batch, written=False)
    assert len(buf.rows) == 1
    (merged,) = buf.rows.values()
    assert merged[STATUS] == "success"
    assert merged[STARTED_AT] == 51.0
    assert merged[COMPLETED_AT] == 70.0
    assert merged[CREATED_AT] == 50.0


def test_dropped_attempts_are_remembered_up_to_a_bound() -> None:
    buf = RowBuffer(max_rows=1)
    buf.admit("held", new_row("held", 1, "t", 0.0))
    buf.admit("first", new_row("first", 1, "t", 0.0))
    buf.admit("first", new_row("first", 1, "t", 0.0))  # its end: the same lost row
    assert buf.dropped == 1
    for i in range(DROPPED_KEYS_KEPT):
        buf.admit(f"other-{i}", new_row(f"other-{i}", 1, "t", 0.0))
    assert buf.dropped == 1 + DROPPED_KEYS_KEPT
    # "first" was the oldest remembered and has been forgotten: it counts again.
    buf.admit("first", new_row("first", 1, "t", 0.0))
    assert buf.dropped == 2 + DROPPED_KEYS_KEPT
    buf.admit(f"other-{DROPPED_KEYS_KEPT - 1}", new_row("x", 1, "t", 0.0))
    assert buf.dropped == 2 + DROPPED_KEYS_KEPT


async def test_the_hooks_count_rows_in_flight_against_the_bound() -> None:
    """The hooks test the bound inline (no call): rows the writer holds count too."""
    from taskiq import TaskiqMessage, TaskiqResult

    from exporter import MonitoringMiddleware

    mw = MonitoringMiddleware(database_url="sqlite+aiosqlite:///unused.sqlite3", max_buffer_rows=2)

    def message(task_id: str) -> TaskiqMessage:
        return TaskiqMessage(task_id=task_id, task_name="n", labels={}, args=[], kwargs={})

    ok = TaskiqResult(is_err=False, return_value=None, execution_time=0.0)
    for task_id in ("a", "b"):
        done = message(task_id)
        await mw.pre_execute(done)
        await mw.post_execute(done, ok)
    batch = mw.runtime.buffer.take(10)  # the writer holds both
    assert len(batch) == 2
    late = message("c")
    await mw.pre_execute(late)
    await mw.post_execute(late, ok)
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
    from taskiq import TaskiqMessage

    from exporter import MonitoringMiddleware
    from exporter.middleware.rows import PARAMS, QUEUED_AT, WORKER_PID

    mw = MonitoringMiddleware(database_url="sqlite+aiosqlite:///unused.sqlite3")
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


async def test_observations_wait_for_the_tallies_but_stay_bounded_while_rows_are_refused() -> None:
    """The hooks append durations and queue waits to lists that the writer's
    apply buckets; with no writer and a full buffer, each refused row folds them."""
    from taskiq import TaskiqMessage, TaskiqResult

    from exporter import MonitoringMiddleware
    from exporter.middleware.labels import SENT_AT_LABEL

    mw = MonitoringMiddleware(database_url="sqlite+aiosqlite:///unused.sqlite3", max_buffer_rows=3)
    ok = TaskiqResult(is_err=False, return_value=None, execution_time=0.0)
    for i in range(10):
        msg = TaskiqMessage(
            task_id=f"t{i}", task_name="n", labels={SENT_AT_LABEL: 1}, args=[], kwargs={}
        )
        await mw.pre_execute(msg)
        await mw.post_execute(msg, ok)
    tally = mw.runtime.aggregator.tasks["n"]
    assert len(tally.ok_durations) <= 3
    assert len(tally.waits) <= 3
    assert mw.runtime.buffer.dropped == 7
    mw.runtime.aggregator.apply()
    assert tally.ok_durations == []
    assert tally.waits == []
    labels = {"task_name": "n"}
    ok_labels = {**labels, "status": "success"}
    assert mw.registry.get_sample_value("taskiq_task_duration_seconds_count", ok_labels) == 10
    assert mw.registry.get_sample_value("taskiq_task_queue_wait_seconds_count", labels) == 10
    # Sent at the epoch's first microsecond: every wait is in the +Inf bucket only.
    inf = {**labels, "le": "+Inf"}
    assert mw.registry.get_sample_value("taskiq_task_queue_wait_seconds_bucket", inf) == 10
    assert mw.registry.get_sample_value("taskiq_task_queue_wait_seconds_sum", labels) > 1e9


async def test_the_in_progress_gauge_counts_the_attempts_running_when_applied() -> None:
    from taskiq import TaskiqMessage, TaskiqResult

    from exporter import MonitoringMiddleware

    mw = MonitoringMiddleware(database_url="sqlite+aiosqlite:///unused.sqlite3")
    msgs = [
        TaskiqMessage(task_id=f"r{i}", task_name=name, labels={}, args=[], kwargs={})
        for i, name in enumerate(("a", "a", "b"))
    ]
    for msg in msgs:
        await mw.pre_execute(msg)

    def in_progress(name: str) -> float | None:
        mw.runtime.aggregator.apply()
        return mw.registry.get_sample_value("taskiq_tasks_in_progress", {"task_name": name})

    assert (in_progress("a"), in_progress("b")) == (2, 1)
    ok = TaskiqResult(is_err=False, return_value=None, execution_time=0.0)
    await mw.post_execute(msgs[0], ok)
    await mw.post_execute(msgs[2], ok)
    assert (in_progress("a"), in_progress("b")) == (1, 0)


async def test_a_worker_leaves_params_to_the_sender_unless_there_are_none() -> None:
    """A message stamped by a sender with this middleware: its PENDING row carries the
    params, so the worker's row does not encode them again; a task without
    arguments still gets whole rows from the worker alone (if the sender's row is
    lost, or its process has no store)."""
    from taskiq import TaskiqMessage, TaskiqResult

    from exporter import MonitoringMiddleware
    from exporter.middleware.labels import SENT_AT_LABEL
    from exporter.middleware.rows import PARAMS

    mw = MonitoringMiddleware(database_url="sqlite+aiosqlite:///unused.sqlite3")
    ok = TaskiqResult(is_err=False, return_value=None, execution_time=0.0)
    for task_id, args in (("no-args", []), ("args", [7])):
        msg = TaskiqMessage(
            task_id=task_id, task_name="n", labels={SENT_AT_LABEL: 1}, args=args, kwargs={}
        )
        await mw.pre_execute(msg)
        await mw.post_execute(msg, ok)
    rows = mw.runtime.buffer.rows
    assert rows["no-args"][PARAMS] == '{"args":[],"kwargs":{}}'
    assert rows["args"][PARAMS] is None


def failed_row(task_id: str, traceback_chars: int = 30_000) -> LogRow:
    row = new_row(task_id, 1, "n", 0.0)
    row[STATUS] = "failed"
    row[PARAMS] = '{"args":[1],"kwargs":{}}'
    row[ERROR_MESSAGE] = "ValueError: " + "m" * 1_000
    row[ERROR_TRACEBACK] = "t" * traceback_chars
    return row


def held_bytes(buf: RowBuffer) -> int:
    return sum(map(row_bytes, buf.rows.values()))


def test_a_row_is_estimated_by_its_texts() -> None:
    small = new_row("t", 1, "n", 0.0)
    big = failed_row("t")
    assert row_bytes(big) - row_bytes(small) == 24 + 1_012 + 30_000


def test_failures_are_bounded_in_bytes_and_lose_tracebacks_before_rows() -> None:
    buf = RowBuffer(100_000, max_bytes=MiB)
    for i in range(600):
        assert buf.admit(f"t{i}", failed_row(f"t{i}"))
        assert held_bytes(buf) <= buf.bytes <= MiB
    assert buf.dropped == 0
    # The oldest failures lost their tracebacks, the newest keep them.
    assert buf.rows["t0"][ERROR_TRACEBACK] == TRACEBACK_DROPPED
    assert buf.rows["t0"][ERROR_MESSAGE].startswith("ValueError: ")
    assert buf.rows["t599"][ERROR_TRACEBACK] == "t" * 30_000
    with_traceback = sum(r[ERROR_TRACEBACK] != TRACEBACK_DROPPED for r in buf.rows.values())
    assert 0 < with_traceback < 40
    assert buf.tracebacks_dropped == 600 - with_traceback
    # Only when no traceback is left are rows dropped, and counted.
    for i in range(600, 2_000):
        buf.admit(f"t{i}", failed_row(f"t{i}"))
        assert held_bytes(buf) <= MiB
    assert buf.dropped > 0
    assert len(buf.rows) + buf.dropped == 2_000
    assert all(r[ERROR_TRACEBACK] == TRACEBACK_DROPPED for r in buf.rows.values())


def test_small_rows_still_fill_the_row_bound() -> None:
    """The byte bound costs nothing to rows that are small: 100,000 successes fit."""
    buf = RowBuffer(100_000)
    for i in range(100_001):
        row = new_row(f"t{i}", 1, "n", 0.0)
        row[STATUS] = "success"
        buf.admit(f"t{i}", row)
    assert len(buf.rows) == 100_000
    assert buf.dropped == 1
    assert buf.tracebacks_dropped == 0


def test_rows_in_flight_count_in_bytes_until_written() -> None:
    buf = RowBuffer(100_000, max_bytes=MiB)
    for i in range(30):
        buf.admit(f"a{i}", failed_row(f"a{i}"))
    batch = buf.take(100)
    assert buf.rows == {}
    for i in range(30):
        buf.admit(f"b{i}", failed_row(f"b{i}"))
    assert held_bytes(buf) + sum(map(row_bytes, batch)) <= MiB
    assert buf.tracebacks_dropped > 0
    stripped = buf.tracebacks_dropped
    buf.settle(batch, written=True)
    for i in range(20):
        buf.admit(f"c{i}", failed_row(f"c{i}"))
    assert buf.tracebacks_dropped == stripped  # room again once written
    assert buf.rows["c19"][ERROR_TRACEBACK] == "t" * 30_000


def test_a_running_row_that_fails_in_place_is_measured_again() -> None:
    """A RUNNING row held while its task runs gets its traceback in place when the
    task fails (MonitoringMiddleware.post_execute): it is measured again."""
    buf = RowBuffer(100_000, max_bytes=MiB)
    running = [new_row(f"r{i}", 1, "n", 0.0) for i in range(40)]
    for row in running:
        row[STATUS] = "running"
        buf.admit(row[0], row)
    buf.measure()
    before = buf.bytes
    for row in running[:34]:
        row[STATUS], row[ERROR_TRACEBACK] = "failed", "t" * 30_000
    buf.measure()
    assert buf.bytes == before + 34 * 30_000
    buf.admit("more", failed_row("more"))  # needs room: the oldest tracebacks go
    assert held_bytes(buf) <= buf.bytes <= MiB
    assert running[0][ERROR_TRACEBACK] == TRACEBACK_DROPPED


def test_a_batch_put_back_is_measured_with_what_merged_into_it() -> None:
    buf = RowBuffer(100_000, max_bytes=MiB)
    for i in range(40):
        buf.admit(f"t{i}", failed_row(f"t{i}", 10_000))
    batch = buf.take(10)
    newer = new_row("t0", 1, "n", 0.0)
    newer[STATUS] = "failed"
    buf.admit("t0", newer)
    buf.settle(batch, written=False)
    assert len(buf.rows) == 40
    assert buf.in_flight == 0
    buf.measure()
    assert buf.bytes == held_bytes(buf)


async def test_the_hooks_lose_tracebacks_not_rows_and_the_counts_add_up(tmp_path: Path) -> None:
    """Failed attempts with long tracebacks while nothing is written (a 1 h flush
    interval): the buffer stays within its bytes, every attempt is stored or counted
    as dropped, and the stripped tracebacks are counted."""
    from sqlalchemy import func, select
    from taskiq import TaskiqMessage, TaskiqResult

    from exporter import MonitoringMiddleware
    from exporter.store.engine import make_engine
    from exporter.store.models import TaskExecutionLog

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
            msg = TaskiqMessage(task_id=f"f{i}", task_name="n", labels={}, args=[], kwargs={})
            await mw.pre_execute(msg)
            try:
                deep(300)
            except ValueError as exc:
                failed.error = exc
                await mw.on_error(msg, failed, exc)
            await mw.post_execute(msg, failed)
            assert held_bytes(buf) <= MiB
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
    sample = mw.registry.get_sample_value
    assert sample("taskiq_exporter_log_rows_dropped_total") == buf.dropped
    assert sample("taskiq_exporter_log_tracebacks_dropped_total") == buf.tracebacks_dropped
