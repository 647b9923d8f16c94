"""The end-to-end run shared by the Redis and RabbitMQ tests.

Real processes only: ``taskiq-exporter worker tests.helpers.e2e_app:broker``,
``taskiq-exporter serve`` and a sender subprocess, on a fresh PostgreSQL
database. Afterwards the log, /metrics and the history API must agree with each
other and with the workload's plan (tests/helpers/e2e_workload.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from tests.helpers import e2e_workload as w
from tests.helpers import processes as p
from tests.helpers.observe import db_count, scrape, value
from tests.helpers.waiting import wait_for

NAMES = 10
# Tracebacks fetched one by one from /history/{id}: all of them up to this many.
MAX_DETAILS = 1_000


def worker(env: dict[str, str], workers: int) -> AbstractContextManager[subprocess.Popen[bytes]]:
    return p.worker(
        env, workers, app="tests.helpers.e2e_app:broker",
        extra=("--log-level", "WARNING"), wait_children=True,
    )  # fmt: skip


def send(env: dict[str, str], tasks: int) -> None:
    cmd = [sys.executable, "-m", "tests.helpers.e2e_app", "send", "0", str(tasks)]
    subprocess.run(cmd, env=env, cwd=p.ROOT, check=True, timeout=180)


def run(
    *, database_url: str, metrics_dir: Path, port: int, tasks: int, broker: str, workers: int = 2
) -> None:
    """Send ``tasks`` tasks through real workers and check everything agrees."""
    env = p.environment(database_url, metrics_dir, E2E_BROKER=broker, E2E_TASK_NAMES=str(NAMES))
    totals = w.expected(0, tasks, NAMES)
    with worker(env, workers), p.service(env, port) as base:
        send(env, tasks)
        wait_for(
            lambda: db_count(database_url, "status IN ('success', 'failed')") == totals.attempts,
            "every attempt's row written",
        )
        wait_for(lambda: _completed(base) == totals.attempts, "every attempt counted", 30)
        check_log(database_url, tasks, totals)
        check_metrics(base, database_url, totals)
        check_history(base, database_url)
        check_rollups(base, database_url)


def _completed(base: str) -> float:
    samples = scrape(base)
    return sum(v for (name, _), v in samples.items() if name == "taskiq_tasks_completed_total")


def _rows(database_url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(database_url.replace("postgresql+asyncpg", "postgresql+pg8000"))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def check_log(database_url: str, tasks: int, totals: w.Totals) -> None:
    """Exactly one terminal row per planned attempt, each with the planned status."""
    rows = _rows(
        database_url,
        "SELECT task_id, attempt, task_name, status, (params->'args'->>0)::int,"
        " completed_at IS NOT NULL, coalesce(length(error_traceback), 0)"
        " FROM task_execution_logs",
    )
    assert len(rows) == totals.attempts
    by_task: dict[str, list[tuple[object, ...]]] = {}
    for row in rows:
        by_task.setdefault(str(row[0]), []).append(row)
    numbers = sorted(int(str(rs[0][4])) for rs in by_task.values())
    assert numbers == list(range(tasks)), "one task_id per task sent, none missing"
    for task_id, attempts in by_task.items():
        i = int(str(attempts[0][4]))
        planned = w.outcomes(i)
        got = {int(str(r[1])): r for r in attempts}
        assert sorted(got) == list(range(1, len(planned) + 1)), (task_id, i, sorted(got))
        for n, status in enumerate(planned, start=1):
            _, _, name, actual, number, completed, tb_len = got[n]
            assert (name, actual, number, completed) == (w.task_name(i, NAMES), status, i, True)
            assert (int(str(tb_len)) > 0) == (status == w.FAILED), (task_id, n)


def check_rollups(base: str, database_url: str) -> None:
    """The minute and hourly rollups (what the API's counts read) equal the log."""
    log = "SELECT task_name, status, count(*) FROM task_execution_logs GROUP BY 1, 2"
    minute = "SELECT task_name, status, sum(count) FROM task_execution_rollups GROUP BY 1, 2"
    hourly = minute.replace("task_execution_rollups", "task_execution_rollups_hourly")
    counts = [
        {(str(n), str(st)): int(str(c)) for n, st, c in _rows(database_url, sql)}
        for sql in (log, minute, hourly)
    ]
    assert counts[1] == counts[0], "minute rollups differ from the log"
    assert counts[2] == counts[0], "hourly rollups differ from the log"
    failed = sum(c for (_, status), c in counts[0].items() if status == w.FAILED)
    page = httpx.get(f"{base}/api/v1/monitoring/history", params={"status": "failed"}, timeout=30)
    assert page.json()["total_count"] == failed


def check_metrics(base: str, database_url: str, totals: w.Totals) -> None:
    """The scraped totals equal the database's, per task name and status."""
    s = scrape(base)
    db_status = Counter(
        {
            (str(name), str(status)): int(str(n))
            for name, status, n in _rows(
                database_url,
                "SELECT task_name, status, count(*) FROM task_execution_logs GROUP BY 1, 2",
            )
        }
    )
    db_attempts = Counter({k: int(str(v)) for k, v in _rows(
        database_url, "SELECT task_name, count(*) FROM task_execution_logs GROUP BY 1"
    )})  # fmt: skip
    db_started = Counter({k: int(str(v)) for k, v in _rows(
        database_url,
        "SELECT task_name, count(*) FROM task_execution_logs"
        " WHERE started_at IS NOT NULL GROUP BY 1",
    )})  # fmt: skip
    # A retried attempt is a failed row with a later attempt of the same task.
    db_retried = Counter({k: int(str(v)) for k, v in _rows(
        database_url,
        "SELECT t.task_name, count(*) FROM task_execution_logs t WHERE t.status = 'failed'"
        " AND EXISTS (SELECT 1 FROM task_execution_logs n"
        " WHERE n.task_id = t.task_id AND n.attempt = t.attempt + 1) GROUP BY 1",
    )})  # fmt: skip
    assert db_status == totals.statuses
    assert db_retried == +totals.retries
    for name in sorted(totals.started):
        for status in (w.SUCCESS, w.FAILED):
            scraped = value(s, "taskiq_tasks_completed_total", task_name=name, status=status)
            assert scraped == db_status[name, status], (name, status)
        assert value(s, "taskiq_task_retries_total", task_name=name) == db_retried[name], name
        assert value(s, "taskiq_tasks_started_total", task_name=name) == db_started[name], name
        # Every attempt was sent once: by the sender, or by the worker that retried it.
        assert value(s, "taskiq_tasks_sent_total", task_name=name) == db_attempts[name], name
        assert value(s, "taskiq_tasks_in_progress", task_name=name) == 0, name
    assert value(s, "taskiq_exporter_log_rows_dropped_total") == 0
    assert sum(db_attempts.values()) == totals.attempts


def check_history(base: str, database_url: str) -> None:
    """Walking status=failed returns every failed attempt; each has its traceback."""
    failed = {
        int(str(r[0])): str(r[1])
        for r in _rows(
            database_url,
            "SELECT id, error_traceback FROM task_execution_logs WHERE status = 'failed'",
        )
    }
    seen: list[int] = []
    params: dict[str, str | int] = {"status": "failed", "page_size": 200}
    with httpx.Client(base_url=base, timeout=30) as client:
        while True:
            page = client.get("/api/v1/monitoring/history", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            for item in body["items"]:
                assert item["status"] == "failed", item
                assert item["has_traceback"], item
                assert item["error_message"], item
                seen.append(item["id"])
            if body["next_cursor"] is None:
                break
            params = {"status": "failed", "page_size": 200, "cursor": body["next_cursor"]}
        assert len(seen) == len(set(seen)), "a row came twice while walking"
        assert set(seen) == set(failed)
        step = max(1, -(-len(failed) // MAX_DETAILS))
        for log_id in sorted(failed)[::step]:
            detail = client.get(f"/api/v1/monitoring/history/{log_id}")
            assert detail.status_code == 200, detail.text
            traceback = detail.json()["error_traceback"]
            assert traceback, log_id
            assert traceback == failed[log_id], log_id
            assert "Traceback (most recent call last)" in traceback
            assert "Error: task " in traceback
