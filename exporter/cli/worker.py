"""``taskiq-exporter worker``: ``taskiq worker`` with a clean metrics directory.

Stale files from a previous run would add their counts to this run's, so the
directory is emptied before the workers start, then ``taskiq worker`` replaces
this process (signals reach it directly).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from exporter.metrics.multiprocess import ENV_VAR, reset_directory

DEFAULT_DIR = "/tmp/taskiq-exporter-metrics"  # noqa: S108 - a per-host scratch directory


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "worker",
        help="run `taskiq worker ARGS...` with an emptied PROMETHEUS_MULTIPROC_DIR",
        description="Everything after the options goes to `taskiq worker`, e.g. "
        "taskiq-exporter worker app:broker --workers 4",
    )
    parser.add_argument(
        "--multiproc-dir",
        help=f"metrics directory (default: ${ENV_VAR}, else {DEFAULT_DIR})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    directory = args.multiproc_dir or os.environ.get(ENV_VAR) or DEFAULT_DIR
    reset_directory(directory)
    os.environ[ENV_VAR] = directory
    argv = [sys.executable, "-m", "taskiq", "worker", *extra]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process on purpose
