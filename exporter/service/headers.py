"""Headers on every response, as a pure ASGI middleware: the answers carry task
arguments and tracebacks, which no browser or proxy cache should keep, and no
browser should read a JSON body as anything else (``nosniff``)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))
STARTS = frozenset({"http.response.start", "websocket.http.response.start"})


class SecurityHeadersMiddleware:
    """Adds ``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff`` to
    every response (a WebSocket refusal included) that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] in STARTS:
                headers = list(message.get("headers", ()))
                present = {bytes(name).lower() for name, _ in headers}
                headers += [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
