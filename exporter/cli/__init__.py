"""The ``taskiq-exporter`` command."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from exporter import __version__
from exporter.cli import db, demo, exports, serve, tail, worker
from exporter.cli.options import CliError, first_line, settings_message

COMMANDS = (db, serve, worker, demo, tail, exports)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskiq-exporter",
        description="Prometheus metrics, execution history and live events for TaskIQ.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"taskiq-exporter {__version__}",
        help="print the version and exit",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="INFO by default; DEBUG also prints the traceback of an error",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "worker":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.log_level != "DEBUG":
        # alembic reports every plugin and migration step at INFO.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        code: int = args.run(args, extra)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message, code = describe(exc)
        if message is None:
            raise
        if args.log_level == "DEBUG":
            traceback.print_exception(exc, file=sys.stderr)
        print(f"taskiq-exporter {args.command}: {message}", file=sys.stderr)
    return code


def describe(exc: Exception) -> tuple[str | None, int]:
    """The one line and exit code for an error a user can act on; (None, 1) for a bug.

    Commands word the errors they have context for (which URL) as a CliError;
    the rest of the known families get their first line."""
    import asyncpg
    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError
    from websockets.exceptions import InvalidStatus, InvalidURI

    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, ValidationError):
        return settings_message(exc), 2
    if isinstance(exc, DBAPIError):
        return f"database error: {first_line(exc.orig or exc)}", 1
    if isinstance(exc, OSError | asyncpg.PostgresError | InvalidStatus | InvalidURI):
        return first_line(exc) or type(exc).__name__, 1
    return None, 1
