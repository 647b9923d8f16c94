"""Starting the product's real processes for tests: workers, the service, senders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
EXPORTER = [sys.executable, "-m", "exporter.cli"]


def require_redis(url: str = "redis://127.0.0.1:6379/0") -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required when CI is set: {exc!r}")
        pytest.skip(f"Redis not available: {exc!r}")


def environment(database_url: str, metrics_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TASKIQ_EXPORTER_DATABASE_URL": database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "TEST_QUEUE": f"texp-{uuid.uuid4().hex[:8]}",
        "TASKIQ_EXPORTER_FLUSH_INTERVAL_SECONDS": "0.05",
        "TASKIQ_EXPORTER_METRICS_FLUSH_INTERVAL_SECONDS": "0.2",
    }
    env.update(extra)
    return env


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL after a minute."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def worker(
    env: dict[str, str],
    workers: int = 2,
    *,
    app: str = "tests.helpers.worker_app:broker",
    extra: tuple[str, ...] = (),
    wait_children: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [*EXPORTER, "worker", app, "--workers", str(workers),
           "--shutdown-timeout", "30", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    try:
        if wait_children:
            # `taskiq-exporter worker` empties the metrics directory before taskiq
            # forks its children: a sender's counters must come after that.
            deadline = time.monotonic() + 30
            while len(child_pids(proc.pid)) < workers and proc.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker processes did not start")
                time.sleep(0.1)
            assert proc.poll() is None, "the worker exited at start"
        yield proc
    finally:
        stop(proc)


@contextmanager
def service(env: dict[str, str], port: int) -> Iterator[str]:
    cmd = [*EXPORTER, "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the service did not start")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def send(env: dict[str, str], total: int, failing: int, slow_seconds: float = 0.0) -> None:
    subprocess.run(
        [sys.executable, "-m", "tests.helpers.worker_app", "send", str(total), str(failing),
         str(slow_seconds)],
        env=env, cwd=ROOT, check=True, timeout=120,
    )  # fmt: skip


def child_pids(parent: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(parent)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]
