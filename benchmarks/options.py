"""Command-line options the benchmarks share."""

from __future__ import annotations

import argparse
import os

ARGS_MODES = ("none", "secrets")


def add_server_url(parser: argparse.ArgumentParser) -> None:
    """--server-url: a PostgreSQL server on which a fresh database is created and dropped."""
    parser.add_argument(
        "--server-url",
        default=os.environ.get(
            "TASKIQ_EXPORTER_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server; a fresh database is created on it and dropped after",
    )


def add_task_args(parser: argparse.ArgumentParser) -> None:
    """--args: what the no-op task is sent with (bench_middleware's workload)."""
    parser.add_argument(
        "--args",
        choices=ARGS_MODES,
        default="none",
        help="none: no arguments; secrets: a user, a password, a note with a URL's"
        " password and an Authorization header, which the middleware redacts",
    )
