"""GET /healthz (the process answers) and GET /readyz (database reachable, schema at
head; with a read replica, its state and lag too, which do not decide readiness: reads
fall back to the primary)."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response

from exporter import __version__
from exporter.service.params import NoQuery, parse_query
from exporter.service.schemas import HealthResponse, ReadinessResponse, ReplicaReadiness
from exporter.service.state import get_state
from exporter.service.store_check import revisions, upgrade_hint
from exporter.store import migrate

logger = logging.getLogger(__name__)
READY_TIMEOUT_SECONDS = 3.0


def _json(model: HealthResponse | ReadinessResponse, status: int = 200) -> Response:
    # Without a replica, /readyz answers as it always did: no replica fields.
    unset = {"reads_from", "replica"} if isinstance(model, ReadinessResponse) else set()
    body = model.model_dump_json(exclude={k for k in unset if getattr(model, k) is None})
    return Response(body, status_code=status, media_type="application/json")


async def _primary_revision(engine: AsyncEngine) -> tuple[bool, str | None]:
    """Whether the primary answered, and its schema revision."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            return True, await migrate.current_revision(engine)
    except Exception as exc:  # any failure means "not ready", with the reason in the log
        logger.warning("readiness: database unreachable: %s", exc)
        return False, None


async def healthz(request: Request) -> Response:
    parse_query(NoQuery, request.query_params)
    return _json(HealthResponse(status="ok", version=__version__))


async def readyz(request: Request) -> Response:
    parse_query(NoQuery, request.query_params)
    state = get_state(request)
    missing = state.store.missing_file()
    if missing is not None:  # nothing to connect to: no warning on every probe
        body = ReadinessResponse(
            status="not ready",
            database=False,
            migrations=missing,
            current_revision=None,
            head_revision=revisions()[0],
        )
        return _json(body, 503)
    (reachable, current), replica = await asyncio.gather(
        _primary_revision(state.engine), state.reads.check()
    )
    try:
        head = revisions()[0]
    except Exception as exc:
        logger.warning("readiness: cannot read the migration scripts: %s", exc)
        head = None
    if not reachable:
        migrations = "unknown: database unreachable"
    elif current == head and head is not None:
        migrations = "at head"
    else:
        migrations = (
            f"database at {current or 'no revision'}, code expects {head}: "
            + upgrade_hint(state.settings.database_url)
        )
    ready = reachable and migrations == "at head"
    body = ReadinessResponse(
        status="ready" if ready else "not ready",
        database=reachable,
        migrations=migrations,
        current_revision=current,
        head_revision=head,
    )
    if replica is not None:
        body.reads_from = "replica" if state.reads.replica_up else "primary"
        body.replica = ReplicaReadiness.model_validate(replica)
    return _json(body, 200 if ready else 503)
