"""One attempt by id, or every attempt of a task_id, with the full traceback."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from exporter.service.errors import BadRequest, NotFound
from exporter.service.schemas import TaskAttemptsResponse, TaskExecutionLogDetail
from exporter.service.state import get_state
from exporter.store import queries
from exporter.store.models import TASK_NAME_MAX

MAX_ID = 2**63 - 1


def _log_id(raw: str) -> int:
    # The length first: int() refuses (ValueError) strings past 4,300 digits.
    if (
        len(raw) > len(str(MAX_ID))
        or not raw.isascii()
        or not raw.isdigit()
        or not 1 <= int(raw) <= MAX_ID
    ):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise BadRequest(
            f"invalid path parameter 'id': must be an integer from 1 to {MAX_ID} (got {shown!r})"
        )
    return int(raw)


async def log_detail(request: Request) -> Response:
    """GET /api/v1/monitoring/history/{id}"""
    log_id = _log_id(request.path_params["id"])
    reads = get_state(request).reads
    row, source = await reads.run(lambda conn: queries.log_by_id(conn, log_id=log_id))
    if row is None:
        raise NotFound(f"no execution log with id {log_id}")
    body = TaskExecutionLogDetail.model_validate(row._mapping)
    headers = reads.headers(source)
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


async def task_attempts(request: Request) -> Response:
    """GET /api/v1/monitoring/history/task/{task_id}"""
    task_id: str = request.path_params["task_id"]
    if not 1 <= len(task_id) <= TASK_NAME_MAX or "\x00" in task_id:
        raise BadRequest(
            f"invalid path parameter 'task_id': must be 1 to {TASK_NAME_MAX} characters"
        )
    reads = get_state(request).reads
    rows, source = await reads.run(lambda conn: queries.logs_by_task_id(conn, task_id=task_id))
    if not rows:
        raise NotFound(f"no execution log for task_id {task_id[:80]!r}")
    body = TaskAttemptsResponse(
        task_id=task_id, attempts=[TaskExecutionLogDetail.model_validate(r._mapping) for r in rows]
    )
    headers = reads.headers(source)
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)
