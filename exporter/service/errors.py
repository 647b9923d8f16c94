"""Every error as ``{"error": "..."}``: 400, 401, 404, 405, 500 and 503, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

logger = logging.getLogger(__name__)

_REASONS = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    500: "internal server error",
    503: "service unavailable",
}


class BadRequest(HTTPException):
    """A 400 whose message names the parameter and what it accepts."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class NotFound(HTTPException):
    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class ServiceUnavailable(HTTPException):
    """A 503 whose message says what is missing and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.url.path[:200]}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path[:200]}"
    elif not message or message == _REASONS.get(exc.status_code, "").title():
        message = _REASONS.get(exc.status_code, "error")
    return error_response(exc.status_code, message, exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never into the body.
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error")


def exception_handlers() -> dict[int | type[Exception], ExceptionHandler]:
    return {HTTPException: http_error, Exception: server_error}
