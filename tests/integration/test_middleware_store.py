"""The middleware end to end through a real broker and a real store (both kinds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from taskiq import Context, InMemoryBroker, TaskiqDepends
from taskiq.middlewares import SimpleRetryMiddleware, SmartRetryMiddleware

from exporter import MonitoringMiddleware
from exporter.store.counts import task_totals
from exporter.store.engine import make_engine
from exporter.store.models import TaskExecutionLog, TaskExecutionRollup
from tests.helpers.middleware import FAST, monitored_broker, sample
from tests.helpers.waiting import eventually

CONTEXT: Any = TaskiqDepends()  # the running task's context, taskiq's dependency


async def rows(url: str) -> list[TaskExecutionLog]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(select(TaskExecutionLog).order_by(TaskExecutionLog.id))
            return list(result.all())  # type: ignore[arg-type]
    finally:
        await engine.dispose()


async def rollups(url: str) -> dict[tuple[str, str], tuple[int, float]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            r = TaskExecutionRollup
            result = await conn.execute(
                select(
                    r.task_name, r.status, func.sum(r.count), func.sum(r.duration_ms_sum)
                ).group_by(r.task_name, r.status)
            )
            return {(n, s): (int(c), float(d)) for n, s, c, d in result}
    finally:
        await engine.dispose()


async def stored(url: str, expected: int) -> bool:
    return len(await rows(url)) == expected


class Abort(BaseException):
    """Not an Exception: a task can still raise it."""


def make_broker(url: str, **options: Any) -> tuple[InMemoryBroker, MonitoringMiddleware]:
    broker, mw = monitored_broker(url, retries=3, **options)

    @broker.task(task_name="t:ok")
    async def ok(x: int, **kwargs: Any) -> int:
        return x

    @broker.task(task_name="t:boom")
    async def boom() -> None:
        raise ValueError("boom happened")

    @broker.task(task_name="t:flaky", retry_on_error=True, max_retries=3)
    async def flaky() -> None:
        raise ConnectionError("still down")

    @broker.task(task_name="t:abort")
    async def abort() -> None:
        raise Abort("stop now")

    return broker, mw


async def test_success_failure_and_params_are_logged(store_url: str) -> None:
    broker, mw = make_broker(store_url)
    await broker.startup()
    await broker.find_task("t:ok").kiq(1, creds={"password": "hunter2", "user": "ann"})  # type: ignore[union-attr]
    await broker.find_task("t:boom").kiq()  # type: ignore[union-attr]
    await broker.shutdown()

    ok, boom = await rows(store_url)
    assert (ok.task_name, ok.status, ok.attempt) == ("t:ok", "success", 1)
    assert ok.params == {
        "args": [1],
        "kwargs": {"creds": {"password": "***", "user": "ann"}},
        "_redacted": ["kwargs.creds.password"],
    }
    assert ok.error_message is None
    assert ok.error_traceback is None
    assert ok.started_at is not None
    assert ok.completed_at is not None
    assert ok.started_at.tzinfo is not None
    assert ok.queued_at is not None
    assert ok.queued_at <= ok.started_at <= ok.completed_at
    assert ok.created_at == ok.queued_at
    assert ok.duration_ms is not None
    assert 0 < ok.duration_ms < 1_000
    assert ok.queue_wait_ms is not None
    assert ok.queue_wait_ms >= 0
    assert ok.worker_pid is not None
    assert ok.worker_host

    assert boom.status == "failed"
    assert boom.error_message == "ValueError: boom happened"
    assert boom.error_traceback is not None
    assert "Traceback (most recent call last)" in boom.error_traceback
    assert 'raise ValueError("boom happened")' in boom.error_traceback

    assert sample(mw, "taskiq_tasks_sent_total", task_name="t:ok") == 1
    assert sample(mw, "taskiq_tasks_completed_total", task_name="t:boom", status="failed") == 1
    assert sample(mw, "taskiq_task_duration_seconds_count", task_name="t:ok", status="success") == 1
    assert sample(mw, "taskiq_task_queue_wait_seconds_count", task_name="t:ok") == 1
    assert sample(mw, "taskiq_tasks_in_progress", task_name="t:ok") == 0
    assert sample(mw, "taskiq_exporter_log_rows_written_total") == 2
    assert await rollups(store_url) == {
        ("t:ok", "success"): (1, pytest.approx(ok.duration_ms)),
        ("t:boom", "failed"): (1, pytest.approx(boom.duration_ms)),
    }


async def test_each_retried_attempt_is_its_own_failed_row(store_url: str) -> None:
    broker, mw = make_broker(store_url)
    await broker.startup()
    await broker.find_task("t:flaky").kiq()  # type: ignore[union-attr]
    await broker.shutdown()

    # (In-place, each retry runs inside the attempt before it: they finish 3, 2, 1.)
    attempts = sorted(await rows(store_url), key=lambda r: r.attempt)
    assert [(r.attempt, r.status) for r in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    assert len({r.task_id for r in attempts}) == 1
    assert all(r.error_message == "ConnectionError: still down" for r in attempts)
    labels = {"task_name": "t:flaky"}
    assert sample(mw, "taskiq_task_retries_total", **labels) == 2
    assert sample(mw, "taskiq_tasks_started_total", **labels) == 3
    assert sample(mw, "taskiq_tasks_completed_total", status="failed", **labels) == 3
    assert (await rollups(store_url))[("t:flaky", "failed")][0] == 3


@pytest.mark.parametrize(
    "retry_middleware",
    [
        SimpleRetryMiddleware(default_retry_count=3, no_result_on_retry=False),
        SmartRetryMiddleware(default_retry_count=3, no_result_on_retry=False, default_delay=0),
    ],
    ids=["simple", "smart"],
)
async def test_a_retry_counts_when_the_retry_middleware_keeps_the_error(
    store_url: str, retry_middleware: Any
) -> None:
    """With no_result_on_retry=False the re-kicked attempt's result keeps its error:
    the retry still counts, so final failures = failed - retries holds, in the
    metrics and in the store (the rows, their rollups, the summary's totals)."""
    mw = MonitoringMiddleware(database_url=store_url, **FAST)
    broker = InMemoryBroker(await_inplace=True).with_middlewares(retry_middleware, mw)
    calls = {"flaky": 0}

    @broker.task(task_name="t:twice", retry_on_error=True, max_retries=3)
    async def twice() -> None:
        calls["flaky"] += 1
        if calls["flaky"] <= 2:
            raise ConnectionError("not yet")

    @broker.task(task_name="t:never", retry_on_error=True, max_retries=3)
    async def never() -> None:
        raise ConnectionError("still down")

    await broker.startup()
    await twice.kiq()
    await never.kiq()
    await broker.shutdown()
    for name, failed, retried, succeeded in (("t:twice", 2, 2, 1), ("t:never", 3, 2, 0)):
        labels = {"task_name": name}
        assert sample(mw, "taskiq_tasks_completed_total", status="failed", **labels) == failed
        assert sample(mw, "taskiq_task_retries_total", **labels) == retried
        if succeeded:
            assert sample(mw, "taskiq_tasks_completed_total", status="success", **labels) == 1
    assert mw._rekicked == {}  # every re-kick was counted by its attempt

    stored = sorted((r.task_name, r.attempt, r.status, r.retried) for r in await rows(store_url))
    assert stored == [
        ("t:never", 1, "failed", True),
        ("t:never", 2, "failed", True),
        ("t:never", 3, "failed", False),
        ("t:twice", 1, "failed", True),
        ("t:twice", 2, "failed", True),
        ("t:twice", 3, "success", None),
    ]
    engine = make_engine(store_url)
    try:
        async with engine.connect() as conn:
            r = TaskExecutionRollup
            query = select(r.task_name, func.sum(r.retried)).where(r.status == "failed")
            rolled = dict((await conn.execute(query.group_by(r.task_name))).all())
            # Whole minutes around the rows: the summary reads them from the rollups.
            now = datetime.now(UTC)
            lo, hi = now - timedelta(hours=1), now + timedelta(minutes=2)
            totals = await task_totals(conn, lo=lo, hi=hi)
    finally:
        await engine.dispose()
    assert rolled == {"t:never": 2, "t:twice": 2}
    assert {name: t.retried for (name, status), t in totals.items() if status == "failed"} == {
        "t:never": 2,
        "t:twice": 2,
    }


async def test_base_exceptions_and_bad_arguments_never_fail_a_task(store_url: str) -> None:
    broker, mw = make_broker(store_url, max_params_bytes=2_048)
    await broker.startup()
    await broker.find_task("t:abort").kiq()  # type: ignore[union-attr]
    ok = broker.find_task("t:ok")
    assert ok is not None
    # (Values JSON cannot hold never reach a worker: taskiq's formatter refuses
    # them at kiq(); the encoder's repr fallback is covered in test_sanitize.)
    await ok.kiq(1, huge="x" * 1_000_000, nested=[[[{"token": "t"}]]])
    await ok.kiq(2, text="caf\udce9 \x00 nul")
    await broker.shutdown()

    abort, huge, text = await rows(store_url)
    assert abort.status == "failed"
    assert abort.error_message == "Abort: stop now"
    assert huge.status == "success"
    assert huge.params["_truncated"] is True
    assert "[truncated" in huge.params["preview"]
    assert text.status == "success"
    assert "\x00" not in str(text.params)
    assert sample(mw, "taskiq_exporter_log_rows_dropped_total") == 0


async def test_rows_are_written_while_tasks_run(store_url: str) -> None:
    broker, mw = make_broker(store_url)
    await broker.startup()
    ok = broker.find_task("t:ok")
    assert ok is not None
    for i in range(300):
        await ok.kiq(i)
    # No shutdown yet: the writer works in the background.
    await eventually(lambda: stored(store_url, 300), "300 rows stored while running", 10)
    await broker.shutdown()
    assert sample(mw, "taskiq_exporter_log_flush_seconds_count") >= 1


async def test_a_task_within_one_flush_window_is_one_insert_and_no_update(pg_store: str) -> None:
    import asyncio

    import asyncpg

    broker, _ = make_broker(pg_store, flush_interval_seconds=2.0)
    await broker.startup()
    ok = broker.find_task("t:ok")
    assert ok is not None
    for i in range(50):
        await ok.kiq(i)
    await broker.shutdown()  # one batch; the writer's connection closes and reports its stats
    conn = await asyncpg.connect(pg_store.replace("+asyncpg", ""))
    try:
        for _ in range(50):
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            ins, upd = await conn.fetchrow(
                # The log's partitions hold the rows and their counters.
                "SELECT sum(n_tup_ins), sum(n_tup_upd) FROM pg_stat_user_tables WHERE relid IN"
                " (SELECT inhrelid FROM pg_inherits"
                "  WHERE inhparent = 'task_execution_logs'::regclass)"
            )
            if ins == 50:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    assert (ins, upd) == (50, 0)
    assert len(await rows(pg_store)) == 50


async def test_the_task_and_its_result_see_the_labels_as_sent(sqlite_store: str) -> None:
    """The send time (and the sender's no-params mark) travel in labels of the
    exporter's own; the worker takes them off once read, so the task's context, the
    middlewares after it and the stored result see only the labels the task was sent
    with, and the queue wait is still measured."""
    broker, mw = monitored_broker(sqlite_store, record_pending=False)

    @broker.task(task_name="t:labels", priority=3)
    async def seen(context: Context = CONTEXT) -> dict[str, Any]:
        return dict(context.message.labels)

    await broker.startup()
    sent = await seen.kiq()
    result = await sent.wait_result(timeout=5)
    await broker.shutdown()

    assert result.return_value == {"priority": 3}
    assert result.labels == {"priority": 3}
    assert sample(mw, "taskiq_task_queue_wait_seconds_count", task_name="t:labels") == 1
    (row,) = await rows(sqlite_store)
    assert row.queue_wait_ms is not None
    assert row.params == {"args": [], "kwargs": {}}
