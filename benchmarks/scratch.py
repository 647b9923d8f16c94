"""A migrated scratch database for one benchmark run, and the order of its rounds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from exporter.store.migrate import upgrade
from exporter.store.pg_admin import drop_database, ensure_database


@asynccontextmanager
async def scratch_database(server_url: str, name: str) -> AsyncIterator[str]:
    """A fresh database ``texp_bench_<name>_<random>`` on the server of
    ``server_url``, migrated to head; dropped on the way out."""
    url = f"{server_url.rsplit('/', 1)[0]}/texp_bench_{name}_{uuid.uuid4().hex[:8]}"
    await ensure_database(url)
    try:
        await upgrade(url)
        yield url
    finally:
        await drop_database(url)


def rotation(names: Sequence[str], round_no: int) -> list[str]:
    """The configurations in this round's order: rotated by one each round, so
    that no configuration always runs right after the same other one."""
    shift = round_no % len(names)
    return [*names[shift:], *names[:shift]]
