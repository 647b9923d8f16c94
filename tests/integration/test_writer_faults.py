"""The database goes away; tasks never notice, and nothing the bound allows is lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from taskiq import InMemoryBroker

from exporter import MonitoringMiddleware
from exporter.store.engine import make_engine
from exporter.store.models import TaskExecutionLog
from tests.helpers.middleware import monitored_broker, sample
from tests.helpers.tcp_proxy import TcpProxy
from tests.helpers.waiting import eventually

WRITE_ERRORS = "taskiq_exporter_log_write_errors_total"
ROWS_DROPPED = "taskiq_exporter_log_rows_dropped_total"
# Retries within tens of milliseconds too (the default backoff starts at 0.5 s).
BACKOFF = {"retry_backoff_initial_seconds": 0.05, "retry_backoff_max_seconds": 0.2}


async def count(url: str) -> int:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count(TaskExecutionLog.id)))).scalar_one())
    finally:
        await engine.dispose()


def counted(url: str, expected: int) -> Callable[[], Awaitable[bool]]:
    """A check for :func:`eventually`: the store holds ``expected`` rows."""

    async def check() -> bool:
        return await count(url) == expected

    return check


def broker_with(url: str, **options: Any) -> tuple[InMemoryBroker, MonitoringMiddleware, Any]:
    broker, mw = monitored_broker(url, **{**BACKOFF, **options})

    @broker.task(task_name="f:work")
    async def work(i: int) -> int:
        return i

    return broker, mw, work


@pytest.fixture
def proxy(pg_store: str) -> Iterator[TcpProxy]:
    """A TCP path to the test's migrated database that the test can cut."""
    url = make_url(pg_store)
    with TcpProxy("127.0.0.1", url.port or 5432, database=url.database or "") as proxy:
        yield proxy


async def test_database_down_at_startup_then_back(pg_store: str, proxy: TcpProxy) -> None:
    url = proxy.url()
    proxy.cut()  # nothing listens: the database is down
    broker, mw, work = broker_with(url)
    await broker.startup()
    results = [await (await work.kiq(i)).wait_result(timeout=5) for i in range(50)]
    assert [r.return_value for r in results] == list(range(50))
    await eventually(lambda: sample(mw, WRITE_ERRORS) > 0, "a write error")
    proxy.restore()
    await eventually(counted(pg_store, 50), "50 rows stored")
    await broker.shutdown()
    assert sample(mw, ROWS_DROPPED) == 0
    assert sample(mw, "taskiq_exporter_log_rows_written_total") == 50


async def test_database_disappears_mid_run(pg_store: str, proxy: TcpProxy) -> None:
    url = proxy.url()
    broker, mw, work = broker_with(url)
    await broker.startup()
    for i in range(100):
        await work.kiq(i)
    await eventually(counted(pg_store, 100), "100 rows stored")
    proxy.cut()
    for i in range(100, 300):
        result = await (await work.kiq(i)).wait_result(timeout=5)
        assert not result.is_err
    await asyncio.sleep(0.3)
    assert await count(pg_store) == 100
    assert sample(mw, "taskiq_exporter_log_buffer_rows") > 0 or mw.runtime.buffer.rows
    proxy.restore()
    await eventually(counted(pg_store, 300), "300 rows stored")
    await broker.shutdown()
    assert sample(mw, ROWS_DROPPED) == 0
    assert sample(mw, WRITE_ERRORS) >= 1


async def test_rows_beyond_the_bound_are_dropped_and_counted(
    pg_store: str, proxy: TcpProxy
) -> None:
    url = proxy.url()
    proxy.cut()
    broker, mw, work = broker_with(url, max_buffer_rows=40, shutdown_flush_timeout_seconds=10)
    await broker.startup()
    for i in range(100):
        result = await (await work.kiq(i)).wait_result(timeout=5)
        assert result.return_value == i
    proxy.restore()
    await broker.shutdown()
    assert await count(pg_store) == 40
    assert sample(mw, ROWS_DROPPED) == 60
    # Metrics do not depend on the log: every task is counted.
    completed = sample(mw, "taskiq_tasks_completed_total", task_name="f:work", status="success")
    assert completed == 100


async def test_shutdown_gives_up_after_its_timeout_and_counts_the_loss(
    pg_store: str, proxy: TcpProxy
) -> None:
    url = proxy.url()
    proxy.cut()
    broker, mw, work = broker_with(url, shutdown_flush_timeout_seconds=0.5)
    await broker.startup()
    for i in range(10):
        await work.kiq(i)
    await broker.shutdown()
    assert sample(mw, ROWS_DROPPED) == 10


async def test_rows_wait_for_a_missing_schema_instead_of_being_dropped(pg_url: str) -> None:
    from exporter.store import migrate

    broker, mw, work = broker_with(pg_url)
    await broker.startup()
    for i in range(20):
        await work.kiq(i)
    await eventually(lambda: sample(mw, WRITE_ERRORS) > 0, "a write error")
    assert sample(mw, ROWS_DROPPED) == 0
    await migrate.upgrade(pg_url)  # the operator runs `taskiq-exporter db upgrade`
    await eventually(counted(pg_url, 20), "20 rows stored")
    await broker.shutdown()
    assert sample(mw, ROWS_DROPPED) == 0


async def test_a_cancelled_shutdown_still_counts_what_it_lost(
    pg_store: str, proxy: TcpProxy
) -> None:
    url = proxy.url()
    proxy.cut()
    broker, mw, work = broker_with(url, shutdown_flush_timeout_seconds=30)
    await broker.startup()
    for i in range(10):
        await work.kiq(i)
    # As taskiq worker does with its --shutdown-timeout:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(broker.shutdown(), timeout=0.5)
    assert sample(mw, ROWS_DROPPED) == 10
