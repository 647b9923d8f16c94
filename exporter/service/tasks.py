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
    reads = get_state(request).reads
    names, source = await reads.run(queries.task_names)
    body = TaskNamesResponse(task_names=names)
    headers = reads.headers(source)
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)
