"""The database on a core of its own, as it would be on its own host.

On a small machine PostgreSQL, Redis and the workers share every core, so the
database's work for the log is taken out of the workers' time: a cost the
exporter does not have where the database runs elsewhere. ``database_core()``
pins the local PostgreSQL server (its postmaster and every process it forks) to
the last core and Redis, this process and every process it starts afterwards
to the others, then restores every affinity. It needs the servers on this
machine and the right to change their affinity (root, or their user).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from exporter.store.pg_admin import asyncpg_dsn
from tests.helpers.processes import child_pids


class PinningUnavailable(RuntimeError):
    """The servers are not on this machine, or their affinity cannot be changed."""


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


async def _postgres_pids(database_url: str) -> list[int]:
    try:
        pg = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            data_directory = await pg.fetchval("SHOW data_directory")
        finally:
            await pg.close()
        postmaster = int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
    except (asyncpg.PostgresError, OSError, ValueError) as exc:
        raise PinningUnavailable(f"cannot find the PostgreSQL server's processes: {exc}") from exc
    return [postmaster, *child_pids(postmaster)]


def _pin(pids: list[int], cores: set[int]) -> dict[int, set[int]]:
    """Pin ``pids`` (0: this process) to ``cores``; their previous affinities."""
    before = {}
    for pid in pids:
        try:
            before[pid] = os.sched_getaffinity(pid)
            os.sched_setaffinity(pid, cores)
        except ProcessLookupError:
            continue  # a backend that ended meanwhile
        except OSError as exc:
            _restore(before)
            raise PinningUnavailable(f"cannot set the affinity of process {pid}: {exc}") from exc
    return before


def _restore(before: dict[int, set[int]]) -> None:
    for pid, cores in before.items():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cores)


@contextlib.asynccontextmanager
async def database_core(database_url: str, redis: Redis) -> AsyncIterator[str]:
    """PostgreSQL on the last core, Redis and this process (and what it starts) on
    the others, for the duration; yields a description of the split."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise PinningUnavailable(f"{len(cores)} core available: nothing to split")
    database, rest = {cores[-1]}, set(cores[:-1])
    redis_pid = int((await redis.info("server"))["process_id"])
    if _command(redis_pid) != "redis-server":
        raise PinningUnavailable(f"Redis (process {redis_pid}) is not on this machine")
    postgres = await _postgres_pids(database_url)
    before = _pin(postgres, database)
    try:
        before |= _pin([redis_pid, 0], rest)
        yield f"PostgreSQL on core {cores[-1]}, Redis and the workers on {sorted(rest)}"
    finally:
        _restore(before)
        # Sessions opened meanwhile inherited the database's core: give them back
        # the server's own affinity.
        if postgres[0] in before:
            _restore({pid: before[postgres[0]] for pid in child_pids(postgres[0])})
