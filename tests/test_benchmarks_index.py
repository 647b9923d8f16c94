"""``python -m benchmarks`` lists every benchmark on disk, and only those."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = {"bench_breakdown", "bench_variants"}


def _run(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_index_lists_every_benchmark_on_disk() -> None:
    lines = _run("benchmarks").splitlines()
    listed = [re.match(r"python -m benchmarks\.(bench_\w+)  +\S", line) for line in lines]
    assert all(listed), lines  # one benchmark a line, each with its summary
    names = {m.group(1) for m in listed if m}
    assert len(names) == len(lines)
    assert names == {p.stem for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert not names & EXPERIMENTS


@pytest.mark.parametrize("module", ["bench_middleware", "bench_instructions"])
def test_the_middleware_benchmarks_take_args(module: str, tmp_path: Path) -> None:
    # bench_middleware creates a metrics directory on import unless one is set.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = _run(f"benchmarks.{module}", "--help", env=env)
    assert "--args {none,secrets}" in out
