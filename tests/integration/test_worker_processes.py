"""Real `taskiq worker --workers 2` processes on Redis, one scrape for all of them."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from exporter.processes import worker_host
from tests.helpers import processes as p
from tests.helpers.observe import db_count, scrape, value
from tests.helpers.waiting import wait_for


def test_two_worker_processes_sum_in_one_scrape(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    p.require_redis()
    env = p.environment(pg_store, tmp_path / "metrics")
    with p.worker(env) as proc, p.service(env, unused_port()) as base:
        p.send(env, 300, 40)
        wait_for(lambda: db_count(pg_store, "status IN ('success', 'failed')") == 300, "all rows")

        def complete() -> bool:
            s = scrape(base)
            done = sum(
                value(s, "taskiq_tasks_completed_total", task_name=n, status=st)
                for n in ("w:quick", "w:fail") for st in ("success", "failed")
            )  # fmt: skip
            return done == 300

        wait_for(complete, "every task counted")
        s = scrape(base)
        assert value(s, "taskiq_tasks_sent_total", task_name="w:quick") == 260
        assert value(s, "taskiq_tasks_sent_total", task_name="w:fail") == 40
        assert value(s, "taskiq_tasks_started_total", task_name="w:quick") == 260
        assert (
            value(s, "taskiq_tasks_completed_total", task_name="w:quick", status="success") == 260
        )
        assert value(s, "taskiq_tasks_completed_total", task_name="w:fail", status="failed") == 40
        assert value(s, "taskiq_tasks_in_progress", task_name="w:quick") == 0
        assert value(s, "taskiq_task_queue_wait_seconds_count", task_name="w:quick") == 260
        assert value(s, "taskiq_exporter_log_rows_dropped_total") == 0
        # Both processes did work, and their pids are in the log.
        assert db_count(pg_store, "true") == 300
        # The sender stored the params; the workers did not encode them again.
        assert db_count(pg_store, "params IS NULL") == 0
        assert db_count(pg_store, "params->'args' = '[7]'::jsonb") == 1
        pids = p.child_pids(proc.pid)
        assert len(pids) == 2
        worked = {pid for pid in pids if db_count(pg_store, f"worker_pid = {pid}") > 0}
        assert worked == set(pids)


def test_sigterm_writes_every_buffered_row_before_exit(pg_store: str, tmp_path: Path) -> None:
    p.require_redis()
    # Rows stay buffered for an hour unless the shutdown writes them.
    env = p.environment(
        pg_store, tmp_path / "metrics", TASKIQ_EXPORTER_FLUSH_INTERVAL_SECONDS="3600"
    )
    with p.worker(env) as proc:
        time.sleep(2)  # workers up
        p.send(env, 200, 10)
        # The sender flushed its pending rows at its own shutdown; the workers hold the rest.
        wait_for(lambda: db_count(pg_store) == 200, "the sender's rows")
        time.sleep(2)
        assert db_count(pg_store, "status IN ('success', 'failed')") == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert db_count(pg_store, "status = 'success'") == 190
    assert db_count(pg_store, "status = 'failed'") == 10


def in_progress(base: str) -> float:
    return value(scrape(base), "taskiq_tasks_in_progress", task_name="w:slow")


def test_a_killed_worker_neither_breaks_the_scrape_nor_stays_in_progress(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    p.require_redis()
    env = p.environment(
        pg_store,
        tmp_path / "metrics",
        TASKIQ_EXPORTER_REAPER_INTERVAL_SECONDS="0.5",
    )
    with p.worker(env, workers=1) as proc, p.service(env, unused_port()) as base:
        time.sleep(2)
        p.send(env, 5, 0, slow_seconds=120)
        wait_for(lambda: db_count(pg_store, "status = 'running'") == 1, "the slow task runs")
        wait_for(lambda: in_progress(base) == 1, "the slow task in progress")
        (child,) = p.child_pids(proc.pid)
        os.kill(child, signal.SIGKILL)
        # Garbage where the killed process's files were must not break scrapes either.
        (tmp_path / "metrics" / f"counter_{child + 100000}.db").write_bytes(b"\x00\x01\x02")
        wait_for(lambda: in_progress(base) == 0, "the killed task no longer in progress")
        s = scrape(base)
        assert value(s, "taskiq_tasks_completed_total", task_name="w:quick", status="success") == 5
        assert value(s, "taskiq_tasks_started_total", task_name="w:slow") == 1
        # The service's reaper sees the worker's pid is gone on this host.
        wait_for(lambda: db_count(pg_store, "status = 'failed'") == 1, "the reaper's row")
        gone = f"WorkerLost: worker process {child} on {socket.gethostname()} is gone%"
        assert db_count(pg_store, f"error_message LIKE '{gone}'") == 1
        # Its host was stored with its pid namespace, which the service shares.
        assert db_count(pg_store, f"worker_host = '{worker_host()}'") == 6
