"""``taskiq-exporter db``: migrations and maintenance of the execution log."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from exporter.cli import search_index
from exporter.cli.options import (
    CliError,
    add_database_url,
    database_errors,
    display_url,
    positive,
    require_database,
    settings_from,
)
from exporter.settings import ExporterSettings
from exporter.store.engine import sqlite_file

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

    from exporter.store.partitions import Partition

_DEFAULTS = ExporterSettings.model_fields


def register(sub: Any) -> None:
    parser = sub.add_parser("db", help="migrate or maintain the execution log store")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("upgrade", help="create the tables, or migrate older ones, to head")
    up.add_argument(
        "revision", nargs="?", default="head", help="an alembic revision (default head)"
    )
    down = actions.add_parser("downgrade", help="undo migrations down to REVISION")
    down.add_argument("revision", help="an alembic revision, or base (drops every table)")
    current = actions.add_parser("current", help="print the database's revision")
    reap = actions.add_parser("reap", help="mark attempts running for too long as failed")
    reap.add_argument(
        "--older-than",
        type=positive,
        dest="orphan_timeout_seconds",
        metavar="SECONDS",
        help="seconds since the attempt started (default: TASKIQ_EXPORTER_ORPHAN_TIMEOUT_SECONDS"
        f", else {_DEFAULTS['orphan_timeout_seconds'].default:g})",
    )
    listing = actions.add_parser("partitions", help="list the log's partitions (PostgreSQL)")
    prune = actions.add_parser(
        "prune", help="make partitions ahead, drop or delete what is older than the retention"
    )
    prune.add_argument(
        "--days",
        type=positive,
        dest="retention_days",
        metavar="DAYS",
        help="days of history to keep (default: TASKIQ_EXPORTER_RETENTION_DAYS, "
        f"else {_DEFAULTS['retention_days'].default:g})",
    )
    search = search_index.register(actions)
    for parser_ in (up, down, current, listing, reap, prune, search):
        add_database_url(parser_)
    parser.set_defaults(run=run)


def print_made(made: list[Partition]) -> None:
    if made:
        first, last = made[0].lo, made[-1].hi
        print(f"made {len(made)} partitions of the log, for {first:%F %H:%M} to {last:%F %H:%M}")


def print_marking(day: datetime, looked_at: int, retried: int) -> None:
    print(f"  {day:%F}: {looked_at} failed attempts, {retried} of them retried", flush=True)


def print_marked(looked_at: int, retried: int) -> None:
    if looked_at:
        print(
            f"marked the {looked_at} failed attempts stored before retries were recorded: "
            f"{retried} were retried"
        )


async def _search_index(engine: AsyncEngine, args: argparse.Namespace) -> None:
    index = search_index.INDEXES[args.index]
    if engine.dialect.name != "postgresql":
        raise CliError("search indexes are for PostgreSQL; on SQLite the search reads every row")
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if args.create:
            await search_index.create(conn, index)
        elif args.drop:
            await search_index.drop(conn, index)
        print(await search_index.describe(conn, index))


def run(args: argparse.Namespace, _extra: list[str]) -> int:
    settings = settings_from(args, "orphan_timeout_seconds", "retention_days")
    url = settings.database_url
    if args.action != "upgrade":
        require_database(url)  # the others only read or change what is there
    elif (path := sqlite_file(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)  # as the middleware does
    with database_errors(url):
        return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: ExporterSettings) -> int:
    from exporter.maintenance import loop, reaper, retention
    from exporter.store import migrate, partitions, retried
    from exporter.store.engine import make_engine

    url = settings.database_url
    # create=False: current, reap and prune must not leave an empty SQLite file behind.
    engine = make_engine(url, create=args.action == "upgrade")
    try:
        if args.action == "upgrade":
            if args.revision == "head" and await partitions.prepare_upgrade(engine):
                print("built the partitioned log's keys on the existing rows (concurrently)")
            if args.revision == "head" and engine.dialect.name == "postgresql":
                async with engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    if await search_index.prepare_upgrade(conn):
                        print("built the error search's index on the existing rows (concurrently)")
            await migrate.upgrade(url, args.revision)
            print_made(await loop.make_partitions(engine, settings))
            if args.revision == "head":
                print_marked(*await retried.backfill(engine, on_day=print_marking))
        elif args.action == "downgrade":
            await migrate.downgrade(url, args.revision)
        if args.action in ("upgrade", "downgrade"):
            revision = await migrate.current_revision(engine)
            head = " (head)" if revision == migrate.head_revision() else ""
            print(f"the database at {display_url(url)} is at revision {revision or 'base'}{head}")
        elif args.action == "partitions":
            async with engine.connect() as conn:
                if not await partitions.is_partitioned(conn):
                    print("the log is one table (not partitioned)")
                for partition in await partitions.partitions(conn):
                    print(partition.describe())
        elif args.action == "search-index":
            await _search_index(engine, args)
        elif args.action == "current":
            print(await migrate.current_revision(engine) or "empty (no revision)")
        elif args.action == "reap":
            count = await reaper.reap_orphans(
                engine, older_than_seconds=settings.orphan_timeout_seconds
            )
            print(f"{count} orphaned attempts marked failed")
        else:
            print_made(await loop.make_partitions(engine, settings))
            pruned = await retention.prune(
                engine,
                days=settings.retention_days,
                batch_rows=settings.retention_batch_rows,
                progress=True,
            )
            for dropped in pruned.dropped:
                print(f"dropped {dropped.describe()}")
            kept = f"{pruned.before:%F %H:%M}"
            print(f"{pruned.rows} rows deleted; nothing created before {kept} is kept")
    finally:
        await engine.dispose()
    return 0
