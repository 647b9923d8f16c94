"""Multiprocess collection: processes' files summed, broken files skipped, the
gauges of dead processes dropped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from exporter.metrics.multiprocess import (
    multiprocess_registry,
    reap_dead_processes,
    reset_directory,
)

# A child process that imports prometheus_client *before* the directory is set,
# as an app importing taskiq's own middleware would, then uses the middleware.
CHILD = """
import asyncio, sys
import prometheus_client  # noqa: F401  (imported first on purpose)
from taskiq import InMemoryBroker
from exporter import MonitoringMiddleware

async def main():
    mw = MonitoringMiddleware(database_url=sys.argv[2], multiproc_dir=sys.argv[1])
    broker = InMemoryBroker(await_inplace=True).with_middlewares(mw)

    @broker.task(task_name="mp:task")
    async def task() -> None:
        return None

    await broker.startup()
    for _ in range(int(sys.argv[3])):
        await task.kiq()
    if sys.argv[4] == "stop":
        await broker.shutdown()
    else:
        mw.runtime.aggregator.apply()  # exit without shutdown: a killed worker

asyncio.run(main())
"""


def run_child(directory: Path, db: str, tasks: int, how: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), db, str(tasks), how],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return len(list(directory.glob("*.db")))


def test_processes_sum_and_dead_ones_leave_no_live_gauges(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    reset_directory(str(directory))
    db = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    run_child(directory, db, 3, "stop")
    run_child(directory, db, 4, "kill")
    registry = multiprocess_registry(str(directory))
    labels = {"task_name": "mp:task"}
    assert registry.get_sample_value("taskiq_tasks_started_total", labels) == 7
    assert (
        registry.get_sample_value("taskiq_tasks_completed_total", {**labels, "status": "success"})
        == 7
    )
    # The stopped process removed its live gauges; the "killed" one is reaped at scrape.
    assert not list(directory.glob("gauge_live*"))
    assert registry.get_sample_value("taskiq_tasks_in_progress", labels) in (None, 0.0)


def test_a_corrupt_or_empty_file_does_not_break_the_scrape(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    reset_directory(str(directory))
    db = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    run_child(directory, db, 2, "stop")
    (directory / "counter_999991.db").write_bytes(b"")
    (directory / "counter_999992.db").write_bytes(b"\xff" * 64)
    good = next(directory.glob("histogram_*.db"))
    (directory / "histogram_999993.db").write_bytes(good.read_bytes()[:100])
    registry = multiprocess_registry(str(directory))
    assert registry.get_sample_value("taskiq_tasks_started_total", {"task_name": "mp:task"}) == 2


def test_reap_dead_processes_removes_only_dead_pids(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / f"gauge_livesum_{proc.pid}.db").write_bytes(b"")
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / f"counter_{proc.pid}.db").write_bytes(b"")
    assert reap_dead_processes(str(tmp_path)) == [proc.pid]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f"gauge_livesum_{os.getpid()}.db", f"counter_{proc.pid}.db"])
