"""An idle worker on Redis keeps its processes.

redis-py 8 reads with a 5 s socket timeout by default, and taskiq-redis's
ListQueueBroker waits in a BRPOP without one: an idle worker's read then ends in
TimeoutError, the process dies and taskiq starts another (taskiq-redis#127). The
app this project ships for Redis and the ones it tests and benchmarks with pass
``socket_timeout=None``; each restart would re-import the app and recreate every
task name's series.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import processes as p

# Past redis-py's 5 s read timeout, with margin.
IDLE_SECONDS = 7.0


@pytest.mark.parametrize(
    "app",
    [
        "exporter.demo.redis_app:broker",  # the compose file's worker
        "tests.helpers.e2e_app:broker",  # the throughput benchmark's
        "tests.helpers.worker_app:broker",
    ],
)
def test_an_idle_worker_is_not_restarted(pg_store: str, tmp_path: Path, app: str) -> None:
    p.require_redis()
    env = p.environment(pg_store, tmp_path / "metrics", E2E_TASK_NAMES="3")
    env["TASKIQ_EXPORTER_DEMO_QUEUE"] = env["TEST_QUEUE"]  # never the demo's own queue
    with p.worker(env, 1, app=app, wait_children=True) as proc:
        before = p.child_pids(proc.pid)
        time.sleep(IDLE_SECONDS)
        assert proc.poll() is None
        assert p.child_pids(proc.pid) == before, "the idle worker process was restarted"
