"""GET /api/v1/monitoring/tasks: the known task names, for filters and Grafana variables."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from exporter.service.params import NoQuery, parse_query
from exporter.service.schemas import TaskNamesResponse
from exporter.service.state import get_state
from exporter.store import queries


async def task_names(request: Request) -> Response:
    parse_query(NoQuery, request.query_params)
    async with get_state(request).engine.connect() as conn:
        names = await queries.task_names(conn)
    body = TaskNamesResponse(task_names=names)
    return Response(body.model_dump_json(), media_type="application/json")
