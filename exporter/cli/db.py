"""``taskiq-exporter db``: migrations and maintenance of the execution log."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from exporter.cli.options import add_database_url, settings_from


def register(sub: Any) -> None:
    parser = sub.add_parser("db", help="migrate or maintain the execution log store")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("upgrade", help="migrate an empty or older database to head")
    up.add_argument("revision", nargs="?", default="head")
    down = actions.add_parser("downgrade", help="undo migrations down to REVISION")
    down.add_argument("revision")
    actions.add_parser("current", help="print the database's revision")
    reap = actions.add_parser("reap", help="mark attempts running for too long as failed")
    reap.add_argument("--older-than", type=float, dest="orphan_timeout_seconds")
    prune = actions.add_parser("prune", help="delete rows older than the retention")
    prune.add_argument("--days", type=float, dest="retention_days")
    for parser_ in (up, down, reap, prune, actions.choices["current"]):
        add_database_url(parser_)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, _extra: list[str]) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from exporter.maintenance import reaper, retention
    from exporter.store import migrate
    from exporter.store.engine import make_engine

    settings = settings_from(args, "orphan_timeout_seconds", "retention_days")
    url = settings.database_url
    if args.action == "upgrade":
        await migrate.upgrade(url, args.revision)
        print(f"database at revision {args.revision}")
    elif args.action == "downgrade":
        await migrate.downgrade(url, args.revision)
        print(f"database at revision {args.revision}")
    else:
        engine = make_engine(url)
        try:
            if args.action == "current":
                print(await migrate.current_revision(engine) or "empty (no revision)")
            elif args.action == "reap":
                count = await reaper.reap_orphans(
                    engine, older_than_seconds=settings.orphan_timeout_seconds
                )
                print(f"{count} orphaned attempts marked failed")
            else:
                count = await retention.prune(
                    engine,
                    days=settings.retention_days,
                    batch_rows=settings.retention_batch_rows,
                    progress=True,
                )
                print(f"{count} rows deleted")
        finally:
            await engine.dispose()
    return 0
