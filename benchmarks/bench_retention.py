"""Retention of the oldest day of a partitioned store: its time, and what it frees.

How much the log shrinks is printed against what that day's partition held.

    python -m benchmarks.bench_retention --database-url postgresql+asyncpg://.../texp_bench

Run it on a store filled by benchmarks.seed_history: it drops the oldest daily
partition for good (run seed_history again to restore it). The retention run is
the service's own (exporter.maintenance.retention.prune), with the retention set
so that its boundary is the end of the oldest partition.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

from sqlalchemy import text

from exporter.maintenance import retention
from exporter.store import partitions
from exporter.store.engine import make_engine

LOG_SIZE = (
    "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
    " WHERE inhparent = 'task_execution_logs'::regclass"
)


async def main(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            if not await partitions.is_partitioned(conn):
                raise SystemExit("the log is not partitioned: run `taskiq-exporter db upgrade`")
            found = [p for p in await partitions.partitions(conn) if not p.default]
            size_before = int(await conn.scalar(text(LOG_SIZE)) or 0)
            rows_before = int(await conn.scalar(text(
                "SELECT count(*) FROM task_execution_logs")) or 0)  # fmt: skip
        oldest = found[0] if found else None
        if oldest is None or oldest.hi is None:
            raise SystemExit("no dated partition to drop")
        now = datetime.now(UTC)
        days = (now - oldest.hi).total_seconds() / 86_400
        started = time.perf_counter()
        pruned = await retention.prune(engine, days=days, batch_rows=10_000, now=now)
        elapsed = time.perf_counter() - started
        async with engine.connect() as conn:
            size_after = int(await conn.scalar(text(LOG_SIZE)) or 0)
            rows_after = int(await conn.scalar(text(
                "SELECT count(*) FROM task_execution_logs")) or 0)  # fmt: skip
    finally:
        await engine.dispose()
    print(f"log before: {rows_before:,} rows, {size_before / 1e9:.2f} GB")
    print(f"dropped: {', '.join(p.describe() for p in pruned.dropped) or 'nothing'}")
    print(f"rows deleted one by one: {pruned.rows:,}")
    print(f"retention run: {elapsed:.3f} s")
    print(
        f"log after: {rows_after:,} rows ({rows_before - rows_after:,} fewer), "
        f"{size_after / 1e9:.2f} GB ({(size_before - size_after) / 1e6:,.1f} MB less; "
        f"the partition held {oldest.size_bytes / 1e6:,.1f} MB)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    asyncio.run(main(parser.parse_args().database_url))
