"""Bearer-token authentication as a pure ASGI middleware.

``/api/*`` (HTTP and the WebSocket) needs the API token when one is set; ``/metrics``
needs the metrics token when one is set; ``/healthz``, ``/readyz``, ``/openapi.json``
and ``/runbook`` stay open. Any other path needs the API token (else the metrics
token) when one is set: what the middleware cannot classify is not served openly.
Paths are taken relative to the app's root, as the router matches them, so that
the app mounted under a prefix or served with a root path is protected the same.
Browsers cannot put headers on a WebSocket, so the WebSocket also accepts
``?token=`` (it may end up in proxy logs: prefer the header). uvicorn logs every
WebSocket handshake with its query string: ``serve`` installs
:class:`QueryStringFilter` (:func:`hide_query_strings`), and an application that
embeds the service under uvicorn should call :func:`hide_query_strings` too.
"""

from __future__ import annotations

import hmac
import json
import logging
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

API_PREFIX = "/api/"
METRICS = "/metrics"
PUBLIC = frozenset({"/healthz", "/readyz", "/openapi.json", "/runbook"})


def route_path(scope: Scope) -> str:
    """``scope["path"]`` without the ``root_path`` the app is mounted or served under:
    the path Starlette's router matches (``starlette._utils.get_route_path``, kept
    private there; tests/test_service_auth.py checks that the two agree)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    if path[len(root)] == "/":
        return path[len(root) :]
    return path


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return str(token.strip())
    return None


def query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def token_matches(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


class BearerAuthMiddleware:
    """Checks ``Authorization: Bearer <token>`` in constant time; 401 otherwise."""

    def __init__(
        self, app: ASGIApp, *, api_token: str | None = None, metrics_token: str | None = None
    ) -> None:
        for name, token in (("api_token", api_token), ("metrics_token", metrics_token)):
            if token is not None and not token.strip():
                # An empty token must not quietly serve everything.
                raise ValueError(f"{name} is empty: pass None to serve without a token")
        self.app = app
        self.api_token = api_token
        self.metrics_token = metrics_token

    def _expected(self, path: str) -> str | None:
        """The token ``path`` needs, None when it is open."""
        if path in PUBLIC:
            return None
        if path == METRICS:
            return self.metrics_token
        if path.startswith(API_PREFIX):
            return self.api_token
        return self.api_token or self.metrics_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        expected = self._expected(route_path(scope))
        if expected is None:
            await self.app(scope, receive, send)
            return
        given = bearer_token(scope)
        if given is None and scope["type"] == "websocket":
            given = query_token(scope)
        if token_matches(given, expected):
            await self.app(scope, receive, send)
            return
        message = "missing bearer token" if given is None else "invalid bearer token"
        if scope["type"] == "websocket":
            await deny_websocket(scope, send, 401, message)
        else:
            await send_json_error(send, 401, message)


async def send_json_error(send: Send, status: int, message: str, *, prefix: str = "http") -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="taskiq-exporter"'))
    await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})


async def deny_websocket(scope: Scope, send: Send, status: int, message: str) -> None:
    """Refuse a WebSocket handshake: an HTTP response where the server supports it
    (uvicorn, the test client), else a close with policy-violation code 1008."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send_json_error(send, status, message, prefix="websocket.http")
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})


# Where uvicorn logs each WebSocket handshake ('%s - "WebSocket %s" [accepted]',
# client and path with its query string) and each request of its access log.
UVICORN_LOGGERS = ("uvicorn.error", "uvicorn.access")


class QueryStringFilter(logging.Filter):
    """Cuts the query string off every path argument of a log record (a ``str``
    argument that starts with ``/``): ``?token=`` must not reach a log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(arg) for arg in record.args)
        return True


def _without_query(arg: object) -> object:
    if isinstance(arg, str) and arg.startswith("/") and "?" in arg:
        return arg.partition("?")[0] + "?[hidden]"
    return arg


def hide_query_strings(loggers: tuple[str, ...] = UVICORN_LOGGERS) -> None:
    """Install :class:`QueryStringFilter` on uvicorn's loggers (once). A filter on a
    logger is kept when uvicorn configures its logging, but call this after
    ``uvicorn.Config(...)`` all the same when you pass a ``log_config`` of your own."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QueryStringFilter) for f in logger.filters):
            logger.addFilter(QueryStringFilter())
