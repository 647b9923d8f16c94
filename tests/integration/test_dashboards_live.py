"""Every Prometheus query of every dashboard panel, run against a real Prometheus
scraping the real exporter service while a real worker (2 processes, Redis broker,
PostgreSQL log) processes a workload with failures; the failure-rate recording
rule checked against the failure share the workload implies; and every SQL panel
run as Grafana's reader role, with the task_name variable as Grafana fills it in
(and the execution dashboard's attempt box on a failed attempt).
Each component connects with its own role (exporter/assets/postgres/).

Needs Redis, PostgreSQL, psql, the ``prometheus`` binary and the ``taskiq-exporter``
command: skipped locally when one is missing, a failure when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dashboards.common import TASK_ALL_VALUE
from dashboards.config import DEFAULT
from dashboards.queries import (
    panel_queries,
    substitute,
    variable_queries,
)
from dashboards.recording import failed_ratio
from dashboards.render import RULES_FILE
from exporter.metrics import names as n
from exporter.slo.load import parse
from exporter.slo.render import render_slo_rules
from exporter.slo.windows import Profile
from tests.helpers.waiting import wait_for
from tests.integration.test_db_roles import (
    Roles,
    create_roles,
    drop_roles,
    first_failed,
    grant,
    panel_rows,
)

pytestmark = [pytest.mark.integration, pytest.mark.prometheus]
ROOT = Path(__file__).resolve().parents[2]
REDIS = os.environ.get("TASKIQ_EXPORTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN = os.environ.get(
    "TASKIQ_EXPORTER_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Two phases with the same failure share per task, so that the rate windows'
# extrapolation cancels out in the ratio and the recording rule is exact.
Plan = dict[str, tuple[int, int]]  # task -> range of its argument i
PHASES: tuple[Plan, Plan] = (
    {"ok": (0, 4), "flaky": (0, 4), "boom": (0, 2), "o'brien": (0, 4)},
    {"ok": (4, 24), "flaky": (4, 44), "boom": (2, 10), "o'brien": (4, 24)},
)
# Prometheus and the service refuse connections until they are up: not yet ready.
UNREACHABLE = (httpx.HTTPError,)
# Objectives for every live task, so that the error-budget panels have data; the
# rules' windows are divided by 60 (5m -> 5s) to fill within the test.
SLOS = """
slos:
  - task_name_regex: "live:.*"
    success: 0.9
    latency: {threshold_seconds: 1.0, objective: 0.9}
    queue_wait: {threshold_seconds: 1.0, objective: 0.9}
"""
EXPECTED_RATIO = {"live:ok": 0.0, "live:flaky": 0.25, "live:boom": 1.0, "live:o'brien": 0.5}
# What the task_name variable may hold: a name with a quote (Grafana's sqlstring
# doubles it) and an attempt to break out of the SQL literal, which matches nothing.
INJECTION = "x') OR true --"

APP = """
import os
from taskiq_redis import ListQueueBroker
from exporter import MonitoringMiddleware

# redis-py 8 reads with a 5 s socket timeout by default: an idle BRPOP would end in
# TimeoutError and kill the worker process.
broker = ListQueueBroker(
    os.environ["LIVE_REDIS_URL"], queue_name=os.environ["LIVE_QUEUE"], socket_timeout=None
)
broker.add_middlewares(MonitoringMiddleware())

@broker.task(task_name="live:ok")
async def ok(i: int) -> int:
    return i

@broker.task(task_name="live:flaky")
async def flaky(i: int) -> int:
    if i % 4 == 0:  # one attempt in four fails
        raise ValueError(f"flaky {i}")
    return i

@broker.task(task_name="live:boom")
async def boom(i: int) -> int:
    raise RuntimeError(f"boom {i}")

@broker.task(task_name="live:o'brien")
async def obrien(i: int) -> int:
    if i % 2 == 0:  # one attempt in two fails
        raise LookupError(f"o'brien {i}")
    return i

TASKS = {"ok": ok, "flaky": flaky, "boom": boom, "o'brien": obrien}
"""
PRODUCER = """
import asyncio, json, sys
import live_app

async def main(plan):
    await live_app.broker.startup()
    for name, (start, stop) in plan.items():
        for i in range(start, stop):
            await live_app.TASKS[name].kiq(i)
    await live_app.broker.shutdown()

asyncio.run(main(json.loads(sys.argv[1])))
"""


def _need(ok: bool, what: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is required in CI")
        pytest.skip(f"{what} is not available here")


def _cli(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def roles() -> Iterator[Roles]:
    """A fresh database and its four roles (roles.sql), dropped after the test."""
    asyncpg = pytest.importorskip("asyncpg")
    name = f"taskiq_live_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError) as exc:
        _need(False, f"PostgreSQL at {PG_ADMIN} ({exc})")
    _need(shutil.which("psql") is not None, "psql (apt-get install postgresql-client)")
    base = PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0]
    made = Roles.random(f"{base}/{name}")
    try:
        create_roles(made)
        yield made
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        drop_roles(made)


Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start long-running processes; every one is stopped after the test."""
    started: list[tuple[subprocess.Popen[bytes], BinaryIO]] = []

    def start(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        started.append((proc, out))
        return proc

    yield start
    for proc, out in reversed(started):
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


def _completed(metrics_url: str) -> dict[str, float]:
    """Completed attempts per task, straight from the exporter's /metrics."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=5).text):
        for sample in family.samples:
            if sample.name == n.total(n.TASKS_COMPLETED):
                task = sample.labels[n.LABEL_TASK_NAME]
                totals[task] = totals.get(task, 0.0) + sample.value
    return totals


def _totals(phase: Plan) -> dict[str, float]:
    return {f"live:{task}": float(stop) for task, (_, stop) in phase.items()}


class Prometheus:
    """A real Prometheus on a loopback port, scraping ``target`` every second."""

    def __init__(self, binary: str, target: str, tmp: Path, spawn: Spawn) -> None:
        port = _port()
        self.api = f"http://127.0.0.1:{port}/api/v1"
        config = tmp / "prometheus.yml"
        scrape = {"job_name": DEFAULT.job, "static_configs": [{"targets": [target]}]}
        slo_rules = tmp / "taskiq-slo.rules.yml"
        slo_rules.write_text(
            render_slo_rules(
                parse(SLOS),
                job=DEFAULT.job,
                runbook_url=DEFAULT.runbook_url,
                profile=Profile(speedup=60),
            )
        )
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES_FILE), str(slo_rules)],
                    "scrape_configs": [scrape],
                }
            )
        )
        spawn(
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            log=tmp / "prometheus.log",
        )
        ready = f"http://127.0.0.1:{port}/-/ready"
        wait_for(
            lambda: httpx.get(ready, timeout=2).status_code == 200,
            "Prometheus to be ready",
            60,
            ignoring=UNREACHABLE,
        )

    def query(self, expr: str) -> dict[str, float]:
        """An instant query: value by task_name."""
        body = httpx.get(f"{self.api}/query", params={"query": expr}, timeout=5).json()
        assert body["status"] == "success", body
        return {
            r["metric"].get("task_name", ""): float(r["value"][1]) for r in body["data"]["result"]
        }

    def query_range(self, expr: str, seconds: int = 20) -> dict[str, Any]:
        end = time.time()
        params: dict[str, str | float] = {
            "query": expr,
            "start": end - seconds,
            "end": end,
            "step": 1,
        }
        return dict(httpx.get(f"{self.api}/query_range", params=params, timeout=10).json())


def test_every_panel_query_returns_data_from_a_live_prometheus(
    tmp_path: Path, roles: Roles, spawn: Spawn
) -> None:
    exporter, prometheus = _cli("taskiq-exporter"), shutil.which("prometheus")
    _need(exporter is not None, "the taskiq-exporter command (pip install -e .)")
    _need(prometheus is not None, "prometheus (apt-get install prometheus)")
    redis = urlsplit(REDIS)
    _need(_reachable(redis.hostname or "", redis.port or 6379), f"Redis at {REDIS}")
    assert exporter is not None
    assert prometheus is not None

    (tmp_path / "live_app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "live_producer.py").write_text(textwrap.dedent(PRODUCER))
    (tmp_path / "metrics").mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "LIVE_REDIS_URL": REDIS,
        "LIVE_QUEUE": f"taskiq-exporter-live-{uuid.uuid4().hex[:8]}",
    }

    def as_role(kind: str) -> dict[str, str]:
        return {**env, "TASKIQ_EXPORTER_DATABASE_URL": roles.url(kind)}

    migrate = subprocess.run(
        [exporter, "db", "upgrade"], env=as_role("owner"), capture_output=True, check=False
    )
    assert migrate.returncode == 0, migrate.stderr.decode()
    grant(roles)

    port = _port()
    service = f"127.0.0.1:{port}"
    serve = ("serve", "--host", "127.0.0.1", "--port", str(port))
    spawn(exporter, *serve, env=as_role("service"), log=tmp_path / "serve.log")
    worker = ("worker", "live_app:broker", "--workers", "2")  # wraps `taskiq worker`
    spawn(exporter, *worker, env=as_role("writer"), log=tmp_path / "worker.log")
    wait_for(
        lambda: httpx.get(f"http://{service}/readyz", timeout=2).status_code == 200,
        "/readyz",
        60,
        ignoring=UNREACHABLE,
    )

    def produce(plan: Plan) -> None:
        producer = [sys.executable, str(tmp_path / "live_producer.py"), json.dumps(plan)]
        run = subprocess.run(producer, env=as_role("writer"), capture_output=True, check=False)
        assert run.returncode == 0, run.stderr.decode()
        wait_for(
            lambda: _completed(f"http://{service}/metrics") == _totals(plan),
            f"{plan} to run",
            60,
            ignoring=UNREACHABLE,
        )

    # Phase 1 is over before Prometheus starts: its first sample holds all of it.
    produce(PHASES[0])
    prom = Prometheus(prometheus, service, tmp_path, functools.partial(spawn, env=env))
    completed = f"sum by (task_name) ({n.total(n.TASKS_COMPLETED)})"
    wait_for(
        lambda: prom.query(completed) == _totals(PHASES[0]),
        "the first scrape",
        60,
        ignoring=UNREACHABLE,
    )
    time.sleep(3)
    produce(PHASES[1])
    wait_for(
        lambda: prom.query(completed) == _totals(PHASES[1]),
        "the last scrape",
        60,
        ignoring=UNREACHABLE,
    )
    time.sleep(5)  # a few more scrapes and rule evaluations

    for window in (DEFAULT.dashboard_window, DEFAULT.failure_rate_warning.window):
        ratios = prom.query(failed_ratio(window))
        assert ratios == pytest.approx(EXPECTED_RATIO, abs=1e-9), window

    for v in variable_queries():
        params = {"match[]": substitute(v.selector, job=DEFAULT.job)}
        body = httpx.get(f"{prom.api}/label/{v.label}/values", params=params, timeout=5).json()
        assert body["status"] == "success", body
        assert body["data"], f"{v.dashboard}: variable {v.variable} has no values"

    # The SQL panels as Grafana's reader role, with the task_name variable set to
    # "All", one task, two tasks (one with a quote) and an injection attempt.
    selections: list[tuple[Sequence[str] | None, set[str] | None]] = [
        (None, None),
        (["live:flaky"], {"live:flaky"}),
        (["live:ok", "live:o'brien"], {"live:ok", "live:o'brien"}),
        ([INJECTION], set()),
    ]
    # The execution dashboard's attempt box holds a failed attempt of live:boom
    # (the injection attempt for the injection).
    failed = asyncio.run(first_failed(roles.url("reader"), "live:boom"))
    for selected, names in selections:
        attempt = INJECTION if names == set() else failed
        for item in asyncio.run(panel_rows(roles.url("reader"), selected, attempt)):
            panel, got = item.panel, item.rows
            found = {r["task_name"] for r in got} if item.by_task else set()
            if names is None or not item.by_task:
                assert got or names == set(), f"{panel} returned no row for All"
            elif names:
                assert found, f"{panel} returned no row for {selected}"
                assert found <= names, f"{panel}: {found} for {selected}"
            if names == set():
                assert got == [], f"{panel}: {selected} matched {found}"

    empty = []
    for q in panel_queries():
        task = "live:flaky" if q.dashboard == "taskiq-task-detail" else TASK_ALL_VALUE
        expr = substitute(q.expr, rate_interval="1m", job=DEFAULT.job, task_name=task)
        body = prom.query_range(expr)
        assert body["status"] == "success", f"{q.dashboard} / {q.panel}: {expr}: {body}"
        if not q.alert_only and not body["data"]["result"]:
            empty.append(f"{q.dashboard} / {q.panel}: {expr}")
    assert empty == [], "panels without data:\n" + "\n".join(empty)
