"""The upgrade of an unpartitioned log to the partitioned one, with a writer writing.

    python -m benchmarks.seed_history --database-url postgresql+asyncpg://.../texp_up \\
        --rows 10000000 --revision 0003
    python -m benchmarks.bench_upgrade --database-url postgresql+asyncpg://.../texp_up

Does what `taskiq-exporter db upgrade` does (the new keys built concurrently, then
the migration, then the partitions ahead) while a writer sends a batch of 50 rows
every 50 ms through the middleware's store, retrying a failed batch as the
middleware's writer does. Prints each phase's time, the writer's slowest batch and
failures, and checks that every row it wrote is in the log once.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from exporter.rows import PENDING, log_row
from exporter.store import migrate, partitions
from exporter.store.engine import make_engine
from exporter.store.pg_admin import asyncpg_dsn
from exporter.store.pg_writer import PostgresRowStore

BATCH = 50
PAUSE_SECONDS = 0.05


class Writer:
    """A worker's writer: batches every 50 ms, each retried until it lands."""

    def __init__(self, url: str) -> None:
        self.store = PostgresRowStore(make_engine(url))
        self.run = uuid.uuid4().hex[:8]
        self.written = 0
        self.failures = 0
        self.slowest = 0.0
        self.stop = asyncio.Event()

    async def loop(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            batch = [
                log_row(f"up-{self.run}-{self.written + i}", 1, "bench:upgrade", PENDING,
                        queued_at=now, created_at=now)
                for i in range(BATCH)
            ]  # fmt: skip
            started = time.perf_counter()
            while True:
                try:
                    await self.store.write(batch, datetime.now(UTC))
                    break
                except Exception:
                    self.failures += 1
                    await asyncio.sleep(0.1)
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.written += BATCH
            await asyncio.sleep(PAUSE_SECONDS)


async def main(url: str) -> None:
    engine = make_engine(url)
    writer = Writer(url)
    task = asyncio.create_task(writer.loop())
    phases: list[tuple[str, float]] = []
    try:
        async with engine.connect() as conn:
            if await partitions.is_partitioned(conn):
                raise SystemExit("already partitioned: seed with --revision 0003 first")
        await asyncio.sleep(1.0)  # the writer at its pace
        for name, step in (
            ("keys built concurrently", partitions.prepare_upgrade(engine)),
            ("migration 0004", migrate.upgrade(url)),
            ("partitions ahead", partitions.ensure(engine, interval_hours=24, ahead_hours=72,
                                                   keep_days=30)),
        ):  # fmt: skip
            started = time.perf_counter()
            await step
            phases.append((name, time.perf_counter() - started))
        await asyncio.sleep(1.0)
    finally:
        writer.stop.set()
        await task
        await writer.store.close()
        await engine.dispose()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        stored, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT task_id) FROM task_execution_logs"
            " WHERE task_id LIKE $1",
            f"up-{writer.run}-%",
        )
        total = await conn.fetchval("SELECT count(*) FROM task_execution_logs")
    finally:
        await conn.close()
    for name, seconds in phases:
        print(f"{name:<26} {seconds:8.1f} s")
    print(f"{'upgrade in all':<26} {sum(s for _, s in phases):8.1f} s  ({total:,} rows in the log)")
    print(
        f"writer: {writer.written:,} rows in batches of {BATCH}, {writer.failures} failed "
        f"attempts retried, slowest batch {writer.slowest:.2f} s; stored {stored:,} "
        f"({distinct:,} distinct)"
    )
    if stored != writer.written or distinct != stored:
        raise SystemExit("rows were lost or doubled")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    asyncio.run(main(parser.parse_args().database_url))
