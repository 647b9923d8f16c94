"""Whether the store can serve: the database exists and its schema is at the
migrations' head. The lifespan checks once at start-up and says in the log what is
missing and how to fix it; while the store is not ready, the routes that read it
answer 503 with the same message and check again at most every few seconds, so
that a ``taskiq-exporter db upgrade`` run meanwhile takes effect without a restart.
Once ready, it is not checked again: a database that goes away later is an
outage, which the routes meet on their own.

The check reads the primary only: migrations run there, and a streaming replica
has the same schema once it has replayed them (a read that meets the old schema on
a lagging replica falls back to the primary: exporter.service.reads).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shlex
import time
from collections.abc import Awaitable, Callable

from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from exporter.service.errors import ServiceUnavailable
from exporter.service.state import get_state
from exporter.store import migrate
from exporter.store.engine import sqlite_file

logger = logging.getLogger(__name__)
RECHECK_SECONDS = 2.0
CHECK_TIMEOUT_SECONDS = 3.0
UNREACHABLE = "the database does not answer (the service log says why); retrying"


@functools.cache
def revisions() -> tuple[str | None, frozenset[str]]:
    """The head revision and every revision the shipped migrations know."""
    # The migration scripts do not change under a running process: read them once.
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return script.get_current_head(), frozenset(s.revision for s in script.walk_revisions())


def upgrade_hint(url: str) -> str:
    """The command that migrates ``url``, its password hidden."""
    shown = make_url(url).render_as_string(hide_password=True)
    return f"run `taskiq-exporter db upgrade --database-url {shlex.quote(shown)}`"


class StoreCheck:
    """Remembers whether the store is ready; :meth:`problem` is cheap once it is."""

    def __init__(
        self, engine: AsyncEngine, url: str, *, recheck_seconds: float = RECHECK_SECONDS
    ) -> None:
        self.engine = engine
        self.url = url
        self.file = sqlite_file(url)
        self.recheck_seconds = recheck_seconds
        self.ready = False
        self.reason: str | None = None
        self._checked_at: float | None = None
        self._logged: str | None = None
        self._lock = asyncio.Lock()

    def missing_file(self) -> str | None:
        """The reason when the store is a SQLite file that does not exist yet."""
        if self.file is None or self.file.exists():
            return None
        return f"no database file at {self.file}: {upgrade_hint(self.url)}"

    async def _reason(self) -> str | None:
        missing = self.missing_file()
        if missing is not None:
            return missing
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            current = await migrate.current_revision(self.engine)
        head, known = revisions()
        if current == head:
            return None
        if current is None:
            return f"the database has no taskiq-exporter schema yet: {upgrade_hint(self.url)}"
        if current not in known:
            return (
                f"the database is at revision {current}, which this version of "
                "taskiq-exporter does not know (migrated by a newer one?): upgrade taskiq-exporter"
            )
        return f"the database is at revision {current}, this version expects {head}: " + (
            upgrade_hint(self.url)
        )

    async def _refresh(self) -> None:
        self._checked_at = time.monotonic()
        try:
            reason = detail = await self._reason()
        except Exception as exc:  # unreachable or refused: the body says so, the log why
            reason, detail = UNREACHABLE, f"cannot check the database schema: {exc}"
        self.ready, self.reason = reason is None, reason
        if reason is None:
            if self._logged is not None:
                logger.info("taskiq-exporter: the database is ready; the API answers again")
        elif self._logged != reason:  # once per reason, not once per check
            logger.warning("taskiq-exporter: the API answers 503 until this is fixed: %s", detail)
        self._logged = reason

    async def start(self) -> None:
        """The start-up check."""
        async with self._lock:
            await self._refresh()

    def _due(self) -> bool:
        last = self._checked_at
        return last is None or time.monotonic() - last >= self.recheck_seconds

    async def problem(self) -> str | None:
        """None when the store is ready, else what is missing and how to fix it."""
        if self.ready:
            return None
        if self._due():
            async with self._lock:  # one check at a time; the others take its answer
                if not self.ready and self._due():
                    await self._refresh()
        return self.reason

    async def wait_ready(self) -> None:
        """Return once the store is ready (checking every ``recheck_seconds``)."""
        while True:
            if await self.problem() is None:
                return
            await asyncio.sleep(self.recheck_seconds)


async def require_store(conn: HTTPConnection) -> None:
    """Raise a 503 naming the fix while the store is not ready."""
    problem = await get_state(conn).store.problem()
    if problem is not None:
        raise ServiceUnavailable(problem)


Endpoint = Callable[[Request], Awaitable[Response]]


def needs_store(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, answering 503 instead while the store is not ready."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        await require_store(request)
        return await endpoint(request)

    return guarded
