"""``taskiq-exporter worker``: ``taskiq worker`` with a clean metrics directory.

Stale files from a previous run would add their counts to this run's, so
prometheus_client's files are removed from the directory before the workers start
(nothing else in it; a directory another user could write to is refused), then
``taskiq worker`` replaces this process (signals reach it directly).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from exporter.cli.options import CliError, multiproc_dir, settings_from
from exporter.metrics.multiprocess import ENV_VAR, UnsafeDirectory, reset_directory
from exporter.settings import DEFAULT_MULTIPROC_DIR

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "worker",
        help="run `taskiq worker ARGS...` with PROMETHEUS_MULTIPROC_DIR cleared of old metrics",
        description="Everything after the options goes to `taskiq worker`, e.g. "
        "taskiq-exporter worker app:broker --workers 4. A producer process (one that "
        f"sends tasks with the middleware) on this host shares the directory when started "
        f"with {ENV_VAR}=DIR after the workers (this command removes the metrics files in "
        "DIR; it refuses a symlink, a directory of another user or one all users may write to).",
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
    try:
        reset_directory(directory)
    except UnsafeDirectory as exc:
        raise CliError(f"refusing the metrics directory: {exc}", code=2) from None
    os.environ[ENV_VAR] = directory
    logger.info(
        "worker metrics in %s (the previous run's files removed); start producer "
        "processes with %s=%s to count their sent tasks there too",
        directory,
        ENV_VAR,
        directory,
    )
    argv = [sys.executable, "-m", "taskiq", "worker", *extra]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process on purpose
