"""GET /openapi.json, built from the pydantic models (schemas.py, params.py)."""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from exporter import __version__
from exporter.service import params, schemas

REF = "#/components/schemas/{model}"
# The keys params.split_param_filters takes (identifiers: their ASCII subset).
PARAM_KEY_PATTERN = f"^([A-Za-z_][A-Za-z0-9_]{{0,{params.PARAM_KEY_MAX - 1}}}|0|[1-9][0-9]?)$"
EVENTS_DOC = (
    "Live events: WebSocket `/api/v1/monitoring/events` (query: task_name, status, since; "
    "with a token, `Authorization: Bearer <token>` or `?token=` for browsers). Messages are "
    "TaskEventMessage. Reconnect with `since=<data.updated_at of the last event>` to replay "
    "what you missed from the store before live events (at least once)."
)


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    properties = model.model_json_schema()["properties"]
    out = []
    for name, field in model.model_fields.items():
        schema = dict(properties[name])
        # Optional[X] is "may be omitted" for a query parameter, not "may be null".
        variants = [s for s in schema.pop("anyOf", []) if s.get("type") != "null"]
        if variants:
            schema.update(variants[0])
        if "$ref" in schema:  # an enum: inline it
            enum_name = schema.pop("$ref").rsplit("/", 1)[-1]
            schema.update(model.model_json_schema()["$defs"][enum_name])
        for key in ("title", "description"):
            schema.pop(key, None)
        if schema.get("default", 0) is None:
            del schema["default"]
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": False,
            "description": f"Must be {field.description}" if field.description else "",
            "schema": schema,
        }
        if schema.get("type") == "object":  # param.<key>: OpenAPI spells it param[<key>]
            schema.pop("default", None)
            schema["propertyNames"] = {"pattern": PARAM_KEY_PATTERN}
            schema["maxProperties"] = params.PARAM_FILTERS_MAX
            param.update(style="deepObject", explode=True)
            param["description"] += (
                ". OpenAPI's form param[<key>]=<value> is taken too; 42 matches 42 and "
                '"42"; a redacted argument never matches'
            )
        out.append(param)
    return out


def _errors(*codes: int) -> dict[str, Any]:
    names = {400: "Invalid parameter", 401: "Missing or wrong bearer token", 404: "Not found"}
    out = {str(c): _json(schemas.ErrorResponse, names[c]) for c in codes}
    out["500"] = _json(schemas.ErrorResponse, "Server error (no stack trace)")
    return out


def _get(
    summary: str,
    ok: dict[str, Any],
    *codes: int,
    query: type[BaseModel] | None = None,
    path: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_errors(*codes)}}
    op["parameters"] = (path or []) + _query_parameters(query or params.NoQuery)
    return {"get": op}


def _api(op: dict[str, Any]) -> dict[str, Any]:
    op["get"]["security"] = [{"bearerAuth": []}, {}]
    op["get"]["responses"]["503"] = _json(
        schemas.ErrorResponse,
        "The database is missing or not migrated yet; the error says how to fix it",
    )
    return op


@functools.cache
def document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        schemas.ErrorResponse,
        schemas.MonitoringMetricsResponse,
        schemas.TaskHistoryResponse,
        schemas.TaskExecutionLogDetail,
        schemas.TaskAttemptsResponse,
        schemas.TaskNamesResponse,
        schemas.HealthResponse,
        schemas.ReadinessResponse,
        schemas.TaskEventMessage,
    ]
    _, defs = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    id_param = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    }
    task_id_param = {
        "name": "task_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    }
    text = {
        "description": "Prometheus text format (OpenMetrics when asked for)",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    base = "/api/v1/monitoring"
    paths = {
        f"{base}/metrics": _api(
            _get(
                "Per-task counts, mean duration and success rate over a window",
                _json(schemas.MonitoringMetricsResponse, "Metrics"),
                400,
                401,
                query=params.MetricsQuery,
            )
        ),
        f"{base}/history": _api(
            _get(
                "Execution history, newest first, with an exact total; searchable by "
                "error message (error=) and by argument (param.<key>=)",
                _json(schemas.TaskHistoryResponse, "A page"),
                400,
                401,
                query=params.HistoryQuery,
            )
        ),
        f"{base}/history/{{id}}": _api(
            _get(
                "One attempt with its traceback",
                _json(schemas.TaskExecutionLogDetail, "The row"),
                400,
                401,
                404,
                path=[id_param],
            )
        ),
        f"{base}/history/task/{{task_id}}": _api(
            _get(
                "Every attempt of a task_id, newest first",
                _json(schemas.TaskAttemptsResponse, "The attempts"),
                400,
                401,
                404,
                path=[task_id_param],
            )
        ),
        f"{base}/tasks": _api(
            _get("Known task names", _json(schemas.TaskNamesResponse, "Task names"), 400, 401)
        ),
        "/metrics": _get("Prometheus scrape", text, 400, 401),
        "/healthz": _get("The process answers", _json(schemas.HealthResponse, "Alive"), 400),
        "/readyz": _get(
            "Database reachable and migrations at head",
            _json(schemas.ReadinessResponse, "Ready"),
            400,
        ),
        "/runbook": _get(
            "The runbook: one section per alert, anchored #<alert name in lower case>",
            {
                "description": "An HTML page (the alert rules' runbook_url)",
                "content": {"text/html": {"schema": {"type": "string"}}},
            },
            400,
        ),
    }
    paths["/readyz"]["get"]["responses"]["503"] = _json(schemas.ReadinessResponse, "Not ready")
    paths["/metrics"]["get"]["security"] = [{"bearerAuth": []}, {}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "taskiq-exporter", "version": __version__, "description": EVENTS_DOC},
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi(_request: Request) -> Response:
    return Response(json.dumps(document()), media_type="application/json")
