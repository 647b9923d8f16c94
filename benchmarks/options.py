"""Command-line options the benchmarks share."""

from __future__ import annotations

import argparse
import os


def add_server_url(parser: argparse.ArgumentParser) -> None:
    """--server-url: a PostgreSQL server on which a fresh database is created and dropped."""
    parser.add_argument(
        "--server-url",
        default=os.environ.get(
            "TASKIQ_EXPORTER_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server; a fresh database is created on it and dropped after",
    )
