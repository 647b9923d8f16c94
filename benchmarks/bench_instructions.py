"""Middleware overhead in CPU instructions: bench_middleware's workload, counted.

    python -m benchmarks.bench_instructions [--small 2000] [--large 12000] [--args {none,secrets}]

bench_middleware's ratio of tasks per second moves by 0.1 from one run to the
next on a shared machine. This runs the same workload (InMemoryBroker with
await_inplace, no-op tasks, the multiprocess metrics directory set, the
PostgreSQL store) under ``valgrind --tool=callgrind``, which counts the
instructions the Python process executes: the same count on every run, whatever
else the machine does. Each configuration runs twice, with ``--small`` and
``--large`` tasks; the difference over the difference in tasks is the count per
task, without the start-up (imports, connecting). A configuration's two runs go
side by side, one per core.

What it does not count: the database server's work (another process), the
kernel's, and time lost to caches and other tenants, which is why the wall-clock
ratio of bench_middleware is lower than the ratio printed here.

Under valgrind the process runs ~50x slower; the writer's flush interval is
stretched by as much so that its batches hold as many rows as at full speed.
``--args`` is bench_middleware's: the task without arguments, or with secrets to
redact. It needs valgrind (Debian: ``apt-get install -y valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from benchmarks.options import add_server_url, add_task_args
from benchmarks.scratch import scratch_database

CONFIGS = ("bare taskiq", "taskiq PrometheusMiddleware", "MonitoringMiddleware")
# ~50x slower under callgrind: 2.5 s stands for bench_middleware's 50 ms flushes.
FLUSH_INTERVAL_UNDER_VALGRIND = 2.5


async def child(config: str, tasks: int, url: str, args: str) -> None:
    """The measured process: one configuration, ``tasks`` no-op tasks sent with ``args``."""
    from taskiq import TaskiqMiddleware
    from taskiq.middlewares.prometheus_middleware import PrometheusMiddleware

    from benchmarks.bench_middleware import run
    from exporter import MonitoringMiddleware

    middlewares: list[TaskiqMiddleware] = []
    if config == "taskiq PrometheusMiddleware":
        path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        middlewares.append(PrometheusMiddleware(metrics_path=path))
    elif config == "MonitoringMiddleware":
        flush = FLUSH_INTERVAL_UNDER_VALGRIND
        middlewares.append(MonitoringMiddleware(database_url=url, flush_interval_seconds=flush))
    await run(tasks, middlewares, args)


async def count(config: str, tasks: int, url: str, args: str, out_dir: Path) -> int:
    """Instructions executed by a child process running ``config``."""
    out = out_dir / f"{uuid.uuid4().hex}.out"
    multiproc = tempfile.mkdtemp(prefix="texp-bench-instr-")
    try:
        proc = await asyncio.create_subprocess_exec(
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.bench_instructions",
            "--child",
            config,
            str(tasks),
            url,
            args,
            # A fixed hash seed: how many probes a dict lookup takes depends on it,
            # and so would the count, from one run to the next.
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": multiproc, "PYTHONHASHSEED": "0"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{config} under valgrind failed: {err.decode()[-2000:]}")
        match = re.search(r"^summary: (\d+)$", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no instruction total in {out}")
        return int(match.group(1))
    finally:
        shutil.rmtree(multiproc, ignore_errors=True)
        out.unlink(missing_ok=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_url(parser)
    parser.add_argument("--small", type=int, default=2_000, help="tasks in the first run")
    parser.add_argument("--large", type=int, default=12_000, help="tasks in the second run")
    add_task_args(parser)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install -y valgrind)")
    if args.large <= args.small:
        raise SystemExit("--large must be more than --small")
    async with scratch_database(args.server_url, "instr") as url:
        per_task: dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix="texp-callgrind-") as out_dir:
            for config in CONFIGS:
                small, large = await asyncio.gather(
                    count(config, args.small, url, args.args, Path(out_dir)),
                    count(config, args.large, url, args.args, Path(out_dir)),
                )
                per_task[config] = (large - small) / (args.large - args.small)
    bare = per_task["bare taskiq"]
    print(
        f"instructions per no-op task, ({args.large} - {args.small} tasks) under callgrind,"
        f" args: {args.args}, InMemoryBroker, PostgreSQL store, PROMETHEUS_MULTIPROC_DIR set"
        f" (python {sys.version.split()[0]})"
    )
    print(f"{'configuration':30} {'instructions':>12} {'over bare':>10} {'ratio':>6}")
    for config, value in per_task.items():
        print(f"{config:30} {value:12,.0f} {value - bare:10,.0f} {bare / value:6.3f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]))
    else:
        asyncio.run(main())
