"""``taskiq-exporter db search-index``: the history search's indexes on PostgreSQL.

``error``: a trigram index (pg_trgm) on failed attempts' error messages, made by
migration 0005 when the role may create the extension. ``params``: a GIN index
(jsonb_path_ops) on every row's params for ``param.<key>`` filters, opt-in because
every write of the log pays for it. Both searches work without their index, reading
every row of their time range instead.

On a partitioned log an index is built partition by partition with ``CREATE INDEX
CONCURRENTLY`` (writers go on), each then attached to the table's index, which is
valid once every partition has its own; the partitions made later get it from the
table. ``--drop`` takes the table's exclusive lock for a moment.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from exporter.cli.options import CliError

LOG = "task_execution_logs"
TRGM_SCHEMA = (
    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
    "WHERE e.extname = 'pg_trgm'"
)
INSUFFICIENT_PRIVILEGE = "42501"


@dataclass(frozen=True, slots=True)
class SearchIndex:
    """One search index: its name, suffix of its partitions' indexes, and body."""

    name: str
    suffix: str
    using: str  # after USING; {trgm} is pg_trgm's schema
    cost: str  # what it costs the writer, as measured (docs/scaling.md)


INDEXES = {
    "error": SearchIndex(
        f"ix_{LOG}_error_trgm",
        "error_trgm",
        "gin (error_message {trgm}.gin_trgm_ops) WHERE status = 'failed'",
        "on by default (migration 0005): failed rows only; writer's server CPU per task "
        "x0.97-1.13 in bench_store, within its noise",
    ),
    "params": SearchIndex(
        f"ix_{LOG}_params",
        "params",
        "gin (params jsonb_path_ops)",
        "opt-in: every row; writer's server CPU per task x0.96-1.25 in bench_store "
        "(+11-13 % the median), 803 MiB at 10 million rows",
    ),
}


def register(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    costs = "; ".join(f"{k}: {v.cost}" for k, v in INDEXES.items())
    parser = actions.add_parser(
        "search-index",
        help="show, create or drop an index of the history search (PostgreSQL)",
        description=f"The history search's indexes. {costs}. Without --create or --drop: "
        "whether it exists.",
    )
    parser.add_argument("index", choices=sorted(INDEXES), help="error or params")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--create", action="store_true", help="build it (concurrently: writers go on)"
    )
    what.add_argument("--drop", action="store_true", help="drop it")
    return parser


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _scalar(conn: AsyncConnection, sql: str, **params: object) -> object:
    return (await conn.execute(text(sql), params)).scalar()


async def describe(conn: AsyncConnection, index: SearchIndex) -> str:
    valid = await _scalar(
        conn, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:i)", i=index.name
    )
    if valid is None:
        return f"{index.name}: absent ({index.cost})"
    size = await _scalar(
        conn,
        "SELECT coalesce(sum(pg_relation_size(indexrelid)), 0) FROM pg_partition_tree(:i) "
        "t JOIN pg_index ON indexrelid = t.relid",
        i=index.name,
    )
    state = "present" if valid else "present but not valid yet (run --create again)"
    return f"{index.name}: {state}, {int(str(size)) / 2**20:.1f} MiB ({index.cost})"


async def _trgm(conn: AsyncConnection) -> str:
    schema = await _scalar(conn, TRGM_SCHEMA)
    if schema is None:
        try:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        except Exception as exc:
            raise CliError(
                "cannot create the extension pg_trgm with this role: as a role with CREATE on "
                "the database (or a superuser) run CREATE EXTENSION pg_trgm, then run this "
                f"again ({str(getattr(exc, 'orig', exc)).splitlines()[0]})"
            ) from exc
        schema = await _scalar(conn, TRGM_SCHEMA)
    return _quoted(str(schema))


async def create(conn: AsyncConnection, index: SearchIndex) -> None:
    """Build ``index`` (idempotent; resumes an interrupted build). ``conn`` must be
    in autocommit mode: CREATE INDEX CONCURRENTLY runs outside a transaction."""
    using = index.using.format(trgm=await _trgm(conn) if "{trgm}" in index.using else "")
    kind = await _scalar(
        conn, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass(:t)", t=LOG
    )
    if kind is None:
        raise CliError(f"there is no {LOG} table: run taskiq-exporter db upgrade")
    if kind != "p":
        await _drop_invalid(conn, index.name)
        await conn.execute(
            text(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index.name} ON {LOG} USING {using}")
        )
        return
    await conn.execute(text(f"CREATE INDEX IF NOT EXISTS {index.name} ON ONLY {LOG} USING {using}"))
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:t) AND NOT EXISTS ("
            " SELECT 1 FROM pg_inherits x JOIN pg_index ix ON ix.indexrelid = x.inhrelid"
            " WHERE x.inhparent = to_regclass(:i) AND ix.indrelid = c.oid)"
        ),
        {"t": LOG, "i": index.name},
    )
    for (partition,) in rows.all():
        child = f"{partition}_{index.suffix}"[:63]
        await _drop_invalid(conn, child)
        await conn.execute(
            text(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_quoted(child)} "
                f"ON {_quoted(partition)} USING {using}"
            )
        )
        await conn.execute(text(f"ALTER INDEX {index.name} ATTACH PARTITION {_quoted(child)}"))


async def _drop_invalid(conn: AsyncConnection, name: str) -> None:
    """An index an interrupted concurrent build left behind, not valid: built again."""
    valid = await _scalar(
        conn, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:i)", i=name
    )
    if valid is False:
        await conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {_quoted(name)}"))


async def drop(conn: AsyncConnection, index: SearchIndex) -> None:
    await conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))


async def prepare_upgrade(conn: AsyncConnection) -> bool:
    """Before migration 0005 on a partitioned log with rows: build its trigram index
    concurrently, so that the migration finds it made instead of building it while
    holding off the writers. Quietly nothing when pg_trgm cannot be had (the
    migration says so). Returns whether it built it."""
    index = INDEXES["error"]
    kind = await _scalar(
        conn, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass(:t)", t=LOG
    )
    if kind != "p" or await _scalar(conn, "SELECT to_regclass(:i)", i=index.name) is not None:
        return False
    if not await _scalar(conn, "SELECT EXISTS (SELECT 1 FROM task_execution_logs)"):
        return False
    try:
        await create(conn, index)
    except CliError:
        return False
    return True
