"""The installed product, exercised as a user would: run with the python of a
fresh virtual environment that has only the wheel (and its locked dependencies),
from an empty directory far from the checkout. Standard library only.

    python check_installed.py --checkout DIR --postgres-url URL --redis-url URL

Checks: --version; `db upgrade` and `db current` on SQLite and PostgreSQL;
`taskiq-exporter worker` on Redis with `serve` beside it until /readyz answers;
a short demo workload whose rows in the history API and counts in /metrics
agree per status; both export commands, whose output equals the checkout's
committed files. Exits 1 with the reason on the first failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib.metadata import version
from pathlib import Path

BIN = Path(sys.executable).parent
CLI = str(BIN / "taskiq-exporter")
API = "/api/v1/monitoring"
COMPLETED = re.compile(r"^taskiq_tasks_completed_total\{([^}]*)\} ([0-9.e+]+)$", re.M)


def fail(message: str) -> None:
    print(f"check_installed: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if result.returncode != 0:
        fail(f"taskiq-exporter {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    print(f"ok: taskiq-exporter {' '.join(args)}", flush=True)
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


@contextmanager
def started(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(what: str, check: object, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            print(f"ok: {what}", flush=True)
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
    fail(f"{what}: not within {timeout:.0f} s\n{tails}")


def completed_by_status(metrics: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for labels, value in COMPLETED.findall(metrics):
        status = re.search(r'status="([^"]*)"', labels)
        if status:
            counts[status.group(1)] = counts.get(status.group(1), 0.0) + float(value)
    return counts


def history_count(base: str, status: str) -> int:
    code, body = get(f"{base}{API}/history?status={status}&page_size=1")
    return int(json.loads(body)["total_count"]) if code == 200 else -1


def check_migrations(work: Path, postgres_url: str) -> None:
    sqlite = f"sqlite+aiosqlite:///{work / 'store.sqlite3'}"
    for url in (sqlite, postgres_url):
        run("db", "upgrade", "--database-url", url)
        current = run("db", "current", "--database-url", url).strip()
        if not re.search(r"\b\d{4}\b", current):
            fail(f"db current printed {current!r}, expected the head revision")


def check_exports(work: Path, checkout: Path) -> None:
    out = work / "exported"
    run("dashboards", "export", str(out / "dashboards"))
    run("rules", "export", str(out / "rules"))
    assets = checkout / "exporter" / "assets"
    pairs = [(out / "rules" / "taskiq.rules.yml", assets / "prometheus/rules/taskiq.rules.yml")]
    pairs += [(out / "dashboards" / p.name, p) for p in (assets / "dashboards").glob("*.json")]
    for exported, committed in pairs:
        if exported.read_bytes() != committed.read_bytes():
            fail(f"{exported} differs from the committed {committed}")
    run("dashboards", "export", "--check", str(out / "dashboards"))
    run("rules", "export", "--check", str(out / "rules"))


def check_workload(work: Path, postgres_url: str, redis_url: str, tasks: int) -> None:
    metrics_dir = work / "metrics"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TASKIQ_EXPORTER_DATABASE_URL": postgres_url,
        "TASKIQ_EXPORTER_REDIS_URL": redis_url,
        "TASKIQ_EXPORTER_DEMO_QUEUE": f"check-installed-{uuid.uuid4().hex[:8]}",
        "TASKIQ_EXPORTER_DEMO_SPEED": "10",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = [work / "worker.log", work / "serve.log"]
    worker = [CLI, "worker", "exporter.demo.redis_app:broker", "--workers", "2"]
    serve = [CLI, "serve", "--port", str(port), "--multiproc-dir", str(metrics_dir)]
    with started(worker, env, logs[0]), started(serve, env, logs[1]):
        wait_for("serve: /readyz answers 200", lambda: get(f"{base}/readyz")[0] == 200, 60, logs)
        producer = subprocess.run(
            [str(BIN / "python"), "-m", "exporter.demo.producer", "--rate", "40",
             "--total", str(tasks)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if producer.returncode != 0:
            fail(f"the demo producer failed:\n{producer.stderr}")

        def settled() -> bool:
            in_flight = history_count(base, "pending") + history_count(base, "running")
            finished = {s: history_count(base, s) for s in ("success", "failed")}
            code, body = get(f"{base}/metrics")
            counted = completed_by_status(body.decode()) if code == 200 else {}
            return (
                in_flight == 0
                and sum(finished.values()) >= tasks
                and all(counted.get(s, 0.0) == n for s, n in finished.items())
            )

        wait_for(f"{tasks} demo tasks: history rows and /metrics agree per status", settled, 90,
                 logs)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkout", type=Path, required=True)
    parser.add_argument("--postgres-url", required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--tasks", type=int, default=60)
    args = parser.parse_args()
    work = Path.cwd()
    if any(work.iterdir()) or str(work).startswith(str(args.checkout.resolve())):
        fail(f"run from an empty directory outside the checkout, not {work}")
    printed = run("--version").strip()
    if printed != f"taskiq-exporter {version('taskiq-exporter')}":
        fail(f"--version printed {printed!r}")
    check_migrations(work, args.postgres_url)
    check_exports(work, args.checkout.resolve())
    check_workload(work, args.postgres_url, args.redis_url, args.tasks)
    with suppress(OSError):
        shutil.rmtree(work / "metrics")
    print("check_installed: the installed package works", flush=True)


if __name__ == "__main__":
    main()
