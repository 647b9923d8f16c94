"""GET /healthz (the process answers) and GET /readyz (database reachable, schema at head)."""

from __future__ import annotations

import asyncio
import functools
import logging

from starlette.requests import Request
from starlette.responses import Response

from exporter.service.params import NoQuery, parse_query
from exporter.service.schemas import HealthResponse, ReadinessResponse
from exporter.service.state import get_state
from exporter.store import migrate

logger = logging.getLogger(__name__)
READY_TIMEOUT_SECONDS = 3.0


@functools.cache
def _head() -> str | None:
    # Read once, on the first probe: the migration scripts do not change under a process.
    return migrate.head_revision()


def _json(model: HealthResponse | ReadinessResponse, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


async def healthz(request: Request) -> Response:
    parse_query(NoQuery, request.query_params)
    return _json(HealthResponse(status="ok"))


async def readyz(request: Request) -> Response:
    parse_query(NoQuery, request.query_params)
    engine = get_state(request).engine
    current: str | None = None
    reachable = False
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            current = await migrate.current_revision(engine)
        reachable = True
    except Exception as exc:  # any failure means "not ready", with the reason in the log
        logger.warning("readiness: database unreachable: %s", exc)
    try:
        head = _head()
    except Exception as exc:
        logger.warning("readiness: cannot read the migration scripts: %s", exc)
        head = None
    if not reachable:
        migrations = "unknown: database unreachable"
    elif current == head and head is not None:
        migrations = "at head"
    else:
        migrations = f"database at {current or 'no revision'}, code expects {head}"
    ready = reachable and migrations == "at head"
    body = ReadinessResponse(
        status="ready" if ready else "not ready",
        database=reachable,
        migrations=migrations,
        current_revision=current,
        head_revision=head,
    )
    return _json(body, 200 if ready else 503)
