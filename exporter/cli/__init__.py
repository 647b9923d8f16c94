"""The ``taskiq-exporter`` command."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from exporter.cli import db, demo, exports, serve, tail, worker

COMMANDS = (db, serve, worker, demo, tail, exports)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskiq-exporter",
        description="Prometheus metrics, execution history and live events for TaskIQ.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
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
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    code: int = args.run(args, extra)
    return code
