"""``taskiq-exporter worker``: ``taskiq worker`` with a clean metrics directory.

Stale files from a previous run would add their counts to this run's, so the
directory is emptied before the workers start, then ``taskiq worker`` replaces
this process (signals reach it directly).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from exporter.cli.options import multiproc_dir, settings_from
from exporter.metrics.multiprocess import ENV_VAR, reset_directory
from exporter.settings import DEFAULT_MULTIPROC_DIR

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "worker",
        help="run `taskiq worker ARGS...` with an emptied PROMETHEUS_MULTIPROC_DIR",
        description="Everything after the options goes to `taskiq worker`, e.g. "
        "taskiq-exporter worker app:broker --workers 4. A producer process (one that "
        f"sends tasks with the middleware) on this host shares the directory when started "
        f"with {ENV_VAR}=DIR after the workers (this command empties DIR).",
    )
    parser.add_argument(
        "--multiproc-dir",
        metavar="DIR",
        help=f"metrics directory (default: $TASKIQ_EXPORTER_MULTIPROC_DIR or ${ENV_VAR}, else "
        f"{DEFAULT_MULTIPROC_DIR}, "
        "which `taskiq-exporter serve` reads by default)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    directory = multiproc_dir(settings_from(args, "multiproc_dir"))
    reset_directory(directory)
    os.environ[ENV_VAR] = directory
    logger.info(
        "worker metrics in %s (emptied); start producer processes with %s=%s to count "
        "their sent tasks there too",
        directory,
        ENV_VAR,
        directory,
    )
    argv = [sys.executable, "-m", "taskiq", "worker", *extra]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process on purpose
