"""PENDING attempts no worker started (a lost message) are failed after their own
timeout and counted once in the rollups, under the orphan reaper's lock."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, select, text

from exporter.maintenance import loop, reaper
from exporter.metrics.names import OLDEST_PENDING_AGE
from exporter.rows import COMPLETED_AT, DURATION_MS, PENDING, STARTED_AT, STATUS, log_row
from exporter.service.store_gauges import store_families
from exporter.settings import ExporterSettings
from exporter.store.engine import make_engine
from exporter.store.models import TaskExecutionLog, TaskExecutionRollup, TaskExecutionRollupHourly
from exporter.store.pg_writer import PostgresRowStore
from exporter.store.sqlite_writer import SqliteRowStore
from tests.helpers.rows import insert_logs, stored_row

LOG = TaskExecutionLog
DAY = 86_400.0


async def rollup_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            minute = dict(
                (await conn.execute(
                    select(TaskExecutionRollup.status, func.sum(TaskExecutionRollup.count))
                    .group_by(TaskExecutionRollup.status)
                )).all()
            )  # fmt: skip
            hourly = (await conn.execute(
                select(func.coalesce(func.sum(TaskExecutionRollupHourly.count), 0))
            )).scalar_one()  # fmt: skip
    finally:
        await engine.dispose()
    assert sum(minute.values()) == hourly  # the hourly rollups follow the minutes
    return {status: int(n) for status, n in minute.items()}


async def rows(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return {r.task_id: r for r in await conn.execute(select(LOG))}
    finally:
        await engine.dispose()


def oldest_pending_age(families: list[Metric]) -> float:
    for family in families:
        if family.name == OLDEST_PENDING_AGE:
            return float(family.samples[0].value)
    raise AssertionError("no oldest-pending gauge")


async def test_a_lost_pending_attempt_is_failed_and_counted_once(store_url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    lost_at = now - timedelta(hours=25)
    await insert_logs(store_url, [
        stored_row(task_id="lost", status="pending", created_at=lost_at),
        stored_row(task_id="queued", status="pending", created_at=now - timedelta(hours=23)),
        stored_row(task_id="done", status="success", created_at=lost_at),
    ])  # fmt: skip
    engine = make_engine(store_url)
    try:
        assert oldest_pending_age(await store_families(engine)) >= 25 * 3600
        assert await reaper.reap_pending(engine, older_than_seconds=DAY) == 1
        # A second pass finds nothing more: nothing is counted twice.
        assert await reaper.reap_pending(engine, older_than_seconds=DAY) == 0
        # The alert's gauge now follows the attempt still queued.
        assert 23 * 3600 <= oldest_pending_age(await store_families(engine)) < 24 * 3600
    finally:
        await engine.dispose()
    got = await rows(store_url)
    lost = got["lost"]
    assert lost.status == "failed"
    assert lost.error_message == "NeverStarted: no worker started this task within 24h"
    assert lost.completed_at >= now
    assert lost.duration_ms is None
    assert lost.created_at == lost_at  # its minute in the rollups
    assert got["queued"].status == "pending"
    assert got["done"].status == "success"
    assert await rollup_counts(store_url) == {"success": 1, "failed": 1}
    engine = make_engine(store_url)
    try:
        async with engine.connect() as conn:
            minute = (await conn.execute(
                select(TaskExecutionRollup.bucket_start).where(
                    TaskExecutionRollup.status == "failed"
                )
            )).scalar_one()  # fmt: skip
    finally:
        await engine.dispose()
    assert minute == lost_at.replace(second=0)

    # The message turns up after all and a worker runs it: the row stays failed
    # and nothing more is counted (the writer counts only rows it finishes).
    late = log_row("lost", 1, "app:task", PENDING, created_at=lost_at.timestamp())
    late[STATUS], late[STARTED_AT], late[COMPLETED_AT] = "success", now.timestamp(), now.timestamp()
    late[DURATION_MS] = 5.0
    writer_engine = make_engine(store_url)
    store = (
        PostgresRowStore(writer_engine, publish_events=False)
        if store_url.startswith("postgresql")
        else SqliteRowStore(writer_engine)
    )
    try:
        await store.write([late], now + timedelta(seconds=1))
    finally:
        await store.close()
    assert (await rows(store_url))["lost"].status == "failed"
    assert await rollup_counts(store_url) == {"success": 1, "failed": 1}


async def test_the_pending_timeout_is_its_own_setting(store_url: str) -> None:
    now = datetime.now(UTC)
    await insert_logs(store_url, [
        stored_row(task_id="two-hours", status="pending", created_at=now - timedelta(hours=2)),
        # Past the orphan timeout but not the pending one: a backlog, not a loss.
        stored_row(task_id="backlog", status="pending", created_at=now - timedelta(minutes=90)),
    ])  # fmt: skip
    assert ExporterSettings().pending_timeout_seconds == DAY
    settings = ExporterSettings(
        database_url=store_url, orphan_timeout_seconds=3600, pending_timeout_seconds=6300
    )
    engine = make_engine(store_url)
    try:
        assert await loop.reap(engine, settings) == 1
    finally:
        await engine.dispose()
    got = await rows(store_url)
    assert got["two-hours"].status == "failed"
    assert got["two-hours"].error_message == (
        "NeverStarted: no worker started this task within 105min"
    )
    assert got["backlog"].status == "pending"


async def test_more_than_one_batch_is_reaped_in_one_pass(
    sqlite_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reaper, "BATCH", 3)
    old = datetime.now(UTC) - timedelta(days=2)
    await insert_logs(sqlite_store, [
        stored_row(task_id=f"p{i}", status="pending", created_at=old) for i in range(7)
    ])  # fmt: skip
    engine = make_engine(sqlite_store)
    try:
        assert await reaper.reap_pending(engine, older_than_seconds=DAY) == 7
    finally:
        await engine.dispose()
    assert await rollup_counts(sqlite_store) == {"failed": 7}


async def test_the_pending_reaper_waits_for_the_reaper_lock(pg_store: str) -> None:
    """One replica at a time: while another holds the reaper's advisory lock,
    this one's loop reaps nothing; once it is free, it does."""
    await insert_logs(pg_store, [
        stored_row(task_id="lost", status="pending",
                created_at=datetime.now(UTC) - timedelta(days=2)),
    ])  # fmt: skip
    settings = ExporterSettings(database_url=pg_store, reaper_interval_seconds=0.05)
    engine, other = make_engine(pg_store), make_engine(pg_store)
    task: asyncio.Task[None] | None = None
    try:
        async with other.connect() as holder:
            await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": loop.LOCK_REAPER})
            await holder.commit()
            task = asyncio.create_task(loop.run_maintenance(engine, settings))
            await asyncio.sleep(1.0)
            assert (await rows(pg_store))["lost"].status == "pending"
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": loop.LOCK_REAPER})
            await holder.commit()
        for _ in range(100):
            if (await rows(pg_store))["lost"].status == "failed":
                break
            await asyncio.sleep(0.05)
        assert (await rows(pg_store))["lost"].status == "failed"
        assert await rollup_counts(pg_store) == {"failed": 1}
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await engine.dispose()
        await other.dispose()
