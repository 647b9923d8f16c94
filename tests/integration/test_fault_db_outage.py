"""PostgreSQL unreachable for 30 s under load, for real ``taskiq worker --workers 2``
processes: no task fails, every row the bound allows is written afterwards, the
rest is counted exactly, and the exporter's own series make
TaskiqLogPersistenceFailing behave in promtool as the rules intend.

The workers reach PostgreSQL through a TCP proxy the test cuts; the client that
sends the tasks and the service read and write PostgreSQL directly (another host,
on the far side of the outage). The service's /metrics is scraped once a second
throughout, and the scraped values become promtool input series in two mappings:

* real time: one scrape = one sample 1 s apart, evaluated every second, the last
  value repeated afterwards (a counter stays flat when nothing happens);
* stretched: one scrape = one sample 1 m apart, evaluated every minute: the same
  shape as an outage sixty times longer (30 minutes) whose writer retries once a
  minute, i.e. the production case the 15-minute rule is written for.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.helpers import processes as p
from tests.helpers.load import Load
from tests.helpers.middleware import monitored_broker, sample
from tests.helpers.observe import (
    BUFFER_ROWS,
    ROWS_DROPPED,
    WRITE_ERRORS,
    Samples,
    Scraper,
    database,
    scrape,
    service,
    value,
)
from tests.helpers.tcp_proxy import TcpProxy
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

RATE = 100.0  # tasks per second, before, during and after the outage
OUTAGE_SECONDS = 30.0
BOUND = 200  # TASKIQ_EXPORTER_MAX_BUFFER_ROWS of each worker process, in the bounded case
RULES = p.ROOT / "exporter" / "assets" / "prometheus" / "rules" / "taskiq.rules.yml"
ALERT = "TaskiqLogPersistenceFailing"
SERIES_LABELS = 'job="taskiq-exporter", instance="worker-1:8000"'
Series = list[dict[str, float] | None]


@dataclass
class Outage:
    sent: int
    samples: Series
    cut_at: int  # index of the first sample taken after the cut
    restored_at: int  # index of the first sample taken after the restore
    final: Samples
    stored: int  # rows that reached a terminal status in the database
    rows: int  # rows in the database, any status
    rows_during_cut: tuple[int, int]  # terminal rows a few seconds into the cut, and at its end


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: apt-get install prometheus")
        pytest.skip("promtool is not installed")
    return path


def completed(s: Samples, status: str) -> float:
    return value(s, "taskiq_tasks_completed_total", task_name="w:quick", status=status)


def run_outage(
    pg_store: str, tmp_path: Path, port: int, *, bound: int | None = None
) -> tuple[Outage, set[int], set[int]]:
    """Load, cut for OUTAGE_SECONDS, restore, drain. With ``bound`` the load stops
    before the restore (see the bounded test for why). Returns the outcome and the
    worker children's pids before and after."""
    p.require_redis()
    promtool()
    env = p.environment(
        pg_store,
        tmp_path / "metrics",
        # Retry once a second (production default: up to 10 s) so the outage is
        # seen in every scrape and the recovery is quick.
        TASKIQ_EXPORTER_RETRY_BACKOFF_MAX_SECONDS="1",
    )
    url = make_url(pg_store)
    target = (url.host or "127.0.0.1", url.port or 5432)
    with TcpProxy(*target) as proxy, database(pg_store) as db:
        worker_env = {**env, "TASKIQ_EXPORTER_DATABASE_URL": proxy.url(url.database or "")}
        if bound is not None:
            worker_env["TASKIQ_EXPORTER_MAX_BUFFER_ROWS"] = str(bound)
        with p.worker(worker_env) as workers:
            wait_for(lambda: len(p.child_pids(workers.pid)) == 2, what="two worker processes")
            children = set(p.child_pids(workers.pid))
            base = f"http://127.0.0.1:{port}"
            with service(env, port), Scraper(base) as scraper:
                with Load(env, RATE) as load:
                    wait_for(lambda: db.count("status = 'success'") >= RATE, what="rows flow")
                    wait_for(lambda: scraper.mark() >= 5, what="five scrapes before the cut")
                    proxy.cut()
                    cut_at, cut_time = scraper.mark(), time.monotonic()
                    wait_for(lambda: time.monotonic() > cut_time + 3, what="3 s into the cut")
                    held = db.count("status IN ('success', 'failed')")
                    wait_for(lambda: time.monotonic() > cut_time + OUTAGE_SECONDS, "outage", 60)
                    rows_during_cut = (held, db.count("status IN ('success', 'failed')"))
                    if bound is not None:
                        sent = load.stop()
                        wait_for(lambda: completed(scrape(base), "success") == sent,
                                 what="every task done before the restore")  # fmt: skip
                    proxy.restore()
                    restored_at = scraper.mark()
                    # The backlog is written while the load goes on (under load the
                    # buffers always hold the last few milliseconds of rows).
                    wait_for(lambda: value(scrape(base), BUFFER_ROWS) < RATE, what="backlog")
                    backlog_done = scraper.mark()
                    wait_for(lambda: scraper.mark() >= backlog_done + 3, what="load after")
                    sent = load.stop()
                wait_for(lambda: completed(scrape(base), "success") == sent, what="all tasks done")
                wait_for(lambda: value(scrape(base), BUFFER_ROWS) == 0, what="buffers drained")
                if bound is None:
                    wait_for(lambda: db.count("status = 'success'") == sent, what="all rows")
                # A few flat scrapes after the recovery, as Prometheus would keep taking.
                settled = scraper.mark()
                wait_for(lambda: scraper.mark() >= settled + 5, what="five scrapes after")
                samples = scraper.stop()
                final = scrape(base)
            after = set(p.child_pids(workers.pid))
        outage = Outage(
            sent=sent,
            samples=samples,
            cut_at=cut_at,
            restored_at=restored_at,
            final=final,
            stored=db.count("status IN ('success', 'failed')"),
            rows=db.count(),
            rows_during_cut=rows_during_cut,
        )
    write_promtool_inputs(outage, tmp_path)
    return outage, children, after


def increases(samples: Series, name: str) -> list[int]:
    """Indexes of the samples where ``name`` went up since the previous scrape."""
    out, last = [], None
    for i, s in enumerate(samples):
        if s is None:
            continue
        if last is not None and s[name] > last:
            out.append(i)
        last = s[name]
    return out


def _number(v: float) -> str:
    return str(int(v)) if v.is_integer() else repr(v)


def input_series(samples: Series, repeat: int) -> list[dict[str, str]]:
    """promtool input series: the scraped values in order (``_`` for a failed
    scrape), then the last value repeated ``repeat`` more times."""
    out = []
    for name in (WRITE_ERRORS, ROWS_DROPPED, BUFFER_ROWS):
        values = ["_" if s is None else _number(s[name]) for s in samples]
        last = next(s[name] for s in reversed(samples) if s is not None)
        out.append(
            {
                "series": f"{name}{{{SERIES_LABELS}}}",
                "values": " ".join(values) + f" {_number(last)}+0x{repeat}",
            }
        )
    return out


def alerts(cause: str, state: str | None) -> dict[str, object]:
    """A promql_expr_test body: the ALERTS series of one cause, in ``state`` or none."""
    samples = []
    if state is not None:
        labels = (
            f'ALERTS{{alertname="{ALERT}", alertstate="{state}", cause="{cause}", '
            f'severity="warning", {SERIES_LABELS}}}'
        )
        samples = [{"labels": labels, "value": 1}]
    return {"expr": f'ALERTS{{alertname="{ALERT}", cause="{cause}"}}', "exp_samples": samples}


def rule_test_file(
    path: Path, samples: Series, unit: str, repeat: int, checks: list[tuple[int, str, str | None]]
) -> Path:
    """A promtool test of the real rules file. ``checks``: (time in ``unit``s, cause,
    expected alert state or None for silent)."""
    doc = {
        "rule_files": [str(RULES)],
        "evaluation_interval": f"1{unit}",
        "tests": [
            {
                "name": path.stem,
                "interval": f"1{unit}",
                "input_series": input_series(samples, repeat),
                "promql_expr_test": [
                    {**alerts(cause, state), "eval_time": f"{t}{unit}"}
                    for t, cause, state in checks
                ],
            }
        ],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=10**9))
    return path


def run_promtool(*files: Path) -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", *map(str, files)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def write_promtool_inputs(outage: Outage, tmp_path: Path) -> None:
    # Kept for a human to rerun: `promtool test rules <tmp_path>/*.test.yml`.
    (tmp_path / "scraped.yml").write_text(
        yaml.safe_dump({"cut_at": outage.cut_at, "restored_at": outage.restored_at,
                        "samples": outage.samples}, width=10**9)
    )  # fmt: skip


def assert_no_task_noticed(outage: Outage, before: set[int], after: set[int]) -> None:
    assert completed(outage.final, "success") == outage.sent
    assert completed(outage.final, "failed") == 0
    assert value(outage.final, "taskiq_tasks_started_total", task_name="w:quick") == outage.sent
    assert value(outage.final, "taskiq_tasks_in_progress", task_name="w:quick") == 0
    # Neither worker process died or was replaced.
    assert after == before
    # Every scrape during the outage worked (the service reads PostgreSQL directly).
    cut = outage.samples[outage.cut_at : outage.restored_at]
    assert cut
    assert all(s is not None for s in cut), cut
    # The cut really held the workers' rows back.
    held, at_end = outage.rows_during_cut
    assert at_end == held, outage.rows_during_cut


def test_thirty_seconds_without_the_database_lose_nothing(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    outage, before, after = run_outage(pg_store, tmp_path, unused_port())
    assert_no_task_noticed(outage, before, after)
    assert outage.sent >= RATE * OUTAGE_SECONDS
    assert outage.stored == outage.rows == outage.sent
    s = outage.samples
    cut = [x for x in s[outage.cut_at : outage.restored_at] if x is not None]
    assert max(x[BUFFER_ROWS] for x in cut) >= RATE * OUTAGE_SECONDS / 2
    assert value(outage.final, ROWS_DROPPED) == 0
    assert value(outage.final, BUFFER_ROWS) == 0
    assert value(outage.final, "taskiq_exporter_log_rows_written_total") >= outage.sent

    errors = increases(s, WRITE_ERRORS)
    assert errors, "no write error was counted during the outage"
    i0, i1 = errors[0], errors[-1]
    assert outage.cut_at <= i0, (errors, outage.cut_at)
    assert i1 <= outage.restored_at + 2, (errors, outage.restored_at)
    # Real time: rate(write_errors[5m]) > 0 from i0 to i1 + 300 s, shorter than the
    # rule's `for: 15m`: a 30 s outage leaves the alert pending, never firing.
    real = rule_test_file(
        tmp_path / "real_time.test.yml", s, "s", 1800,
        [
            (max(i0 - 1, 0), "write_errors", None),
            (outage.restored_at, "write_errors", "pending"),
            (i0 + 900, "write_errors", None),
            (i0 + 900, "rows_dropped", None),
        ],
    )  # fmt: skip
    # Stretched (x60): errors from minute i0 to i1 keep the rate above zero until
    # i1 + 4 m; pending from i0, firing from i0 + 15 m.
    assert i1 + 4 > i0 + 15 + 2, f"errors in scrapes {i0}..{i1}: too short to fire stretched"
    stretched = rule_test_file(
        tmp_path / "stretched.test.yml", s, "m", 60,
        [
            (i0 + 13, "write_errors", "pending"),
            ((i0 + 15 + i1 + 4) // 2, "write_errors", "firing"),
            (i1 + 10, "write_errors", None),
            ((i0 + 15 + i1 + 4) // 2, "rows_dropped", None),
        ],
    )  # fmt: skip
    run_promtool(real, stretched)


def test_rows_beyond_the_bound_are_dropped_and_counted_exactly(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    # The load stops (and every task finishes) before the restore: a task whose
    # start was dropped at a full buffer but whose end arrives after the restore
    # emptied it would be counted as dropped *and* stored as a partial row, and
    # "dropped == sent - stored" would hold only up to such races.
    outage, before, after = run_outage(pg_store, tmp_path, unused_port(), bound=BOUND)
    assert_no_task_noticed(outage, before, after)
    dropped = value(outage.final, ROWS_DROPPED)
    assert dropped > 0
    assert dropped == outage.sent - outage.stored, (outage.sent, outage.stored, dropped)
    # The sender is on the far side of the outage: every attempt has its row, the
    # dropped ones stay as the client wrote them (pending).
    assert outage.rows == outage.sent
    s = outage.samples
    # Both workers' buffers filled up to the bound and no further (the gauge also
    # sums the client's own buffer: the few rows it holds between two flushes).
    fullest = max(x[BUFFER_ROWS] for x in s if x is not None)
    assert 2 * BOUND <= fullest <= 2 * BOUND + RATE / 10, fullest

    drops = increases(s, ROWS_DROPPED)
    assert drops, "no drop was counted during the outage"
    d0, d1 = drops[0], drops[-1]
    assert d1 >= d0 + 4, f"drops only in scrapes {drops}: too few to place the alert"
    # Real time: rate(rows_dropped[5m]) > 0 from d0 to d1 + 300 s, longer than
    # `for: 5m`: the alert fires between d0 + 300 s and d1 + 300 s. The write-error
    # variant only goes pending, as in the unbounded case.
    errors = increases(s, WRITE_ERRORS)
    real = rule_test_file(
        tmp_path / "real_time.test.yml", s, "s", 1800,
        [
            (max(d0 - 1, 0), "rows_dropped", None),
            (d0 + 290, "rows_dropped", "pending"),
            ((d0 + 300 + d1 + 300) // 2, "rows_dropped", "firing"),
            (d1 + 310, "rows_dropped", None),
            (errors[0] + 900, "write_errors", None),
        ],
    )  # fmt: skip
    stretched = rule_test_file(
        tmp_path / "stretched.test.yml", s, "m", 60,
        [((d0 + 5 + d1 + 4) // 2, "rows_dropped", "firing")],
    )  # fmt: skip
    run_promtool(real, stretched)


def test_sigterm_during_an_outage_counts_every_row_it_loses(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    p.require_redis()
    env = p.environment(pg_store, tmp_path / "metrics")
    url = make_url(pg_store)
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    with (
        TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy,
        database(pg_store) as db,
        service(env, port),
    ):
        worker_env = {**env, "TASKIQ_EXPORTER_DATABASE_URL": proxy.url(url.database or "")}
        # `taskiq worker` with its default --shutdown-timeout, as users start it.
        cmd = [*p.EXPORTER, "worker", "tests.helpers.worker_app:broker", "--workers", "2"]
        workers = subprocess.Popen(cmd, env=worker_env, cwd=p.ROOT)
        try:
            wait_for(lambda: len(p.child_pids(workers.pid)) == 2, what="two worker processes")
            proxy.cut()
            p.send(env, 50, 0)
            wait_for(lambda: completed(scrape(base), "success") == 50, what="tasks done")
            workers.terminate()
            assert workers.wait(120) == 0
        finally:
            if workers.poll() is None:
                workers.kill()
                workers.wait()
        lost = 50 - db.count("status IN ('success', 'failed')")
        assert lost == 50
        assert value(scrape(base), ROWS_DROPPED) == lost


async def test_shutdown_is_bounded_when_the_database_does_not_answer() -> None:
    async def swallow(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    blackhole = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/blackhole"
    broker, mw = monitored_broker(blackhole, shutdown_flush_timeout_seconds=2)

    @broker.task(task_name="hole:job")
    async def job(i: int) -> int:
        return i

    try:
        await broker.startup()
        for i in range(10):
            assert (await (await job.kiq(i)).wait_result(timeout=5)).return_value == i
        started = time.monotonic()
        await asyncio.wait_for(broker.shutdown(), 60)
        took = time.monotonic() - started
    finally:
        server.close()
    assert sample(mw, ROWS_DROPPED) == 10
    assert took < 2 + 1.5, f"shutdown took {took:.1f} s with a 2 s flush timeout"
