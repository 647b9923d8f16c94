"""Options shared by several commands: each also a TASKIQ_EXPORTER_* variable."""

from __future__ import annotations

import argparse
from typing import Any

from exporter.settings import ExporterSettings


def add_database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="postgresql+asyncpg://user@host/db or sqlite+aiosqlite:///file.sqlite3 "
        "(default: TASKIQ_EXPORTER_DATABASE_URL, else the embedded SQLite file)",
    )


def settings_from(args: argparse.Namespace, *fields: str) -> ExporterSettings:
    """Settings from the environment, overridden by the flags that were given
    (each flag's destination is named like its setting)."""
    overrides: dict[str, Any] = {}
    for field in ("database_url", *fields):
        value = getattr(args, field, None)
        if value is not None:
            overrides[field] = value
    return ExporterSettings(**overrides)
