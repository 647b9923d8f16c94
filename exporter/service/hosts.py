"""Host and Origin checks as a pure ASGI middleware: a web page elsewhere cannot
read the API through the browser of someone who can reach it.

A browser keeps a page from reading another site's responses, with two gaps. A
page can rebind its own name to 127.0.0.1 (DNS rebinding): its requests then
reach the service, but carry the page's name in ``Host``; so a request whose Host
names none of the trusted hosts gets a 400. And a page may open a WebSocket to
any site: the handshake carries the page's ``Origin``; so a handshake from an
origin that is not on a trusted host, not the service's own and not listed gets a
403 before it is accepted. Clients that are not browsers send no Origin.

Starlette's TrustedHostMiddleware answers a plain-text 400 and checks every path;
this one answers ``{"error": ...}`` naming the setting to change, leaves the
probes' paths alone (Kubernetes sends the pod's address as Host) and checks the
WebSocket's Origin too.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from exporter.service.auth import deny_websocket, route_path, send_json_error

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# Addresses that bind every interface name no host a client could ask for.
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - compared, not bound
UNCHECKED = frozenset({"/healthz", "/readyz"})
HOSTS_SETTING = "TASKIQ_EXPORTER_ALLOWED_HOSTS"
ORIGINS_SETTING = "TASKIQ_EXPORTER_ALLOWED_ORIGINS"


def trusted_hosts(bind: str, allowed: Iterable[str] | None = None) -> frozenset[str]:
    """The loopback names, the address bound (unless it binds every interface) and
    the configured names."""
    hosts = {*LOCAL_HOSTS, *(allowed or ())}
    bound = bind.strip().lower().removeprefix("[").removesuffix("]")
    if bound not in WILDCARD_BINDS:
        hosts.add(bound)
    return frozenset(hosts)


def host_name(value: str) -> str:
    """The name in a Host header or an origin's ``host[:port]``: lower case, without
    the port, an IPv6 address without its brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    return value.partition(":")[0]


def matches(name: str, patterns: Iterable[str]) -> bool:
    """``name`` is one of ``patterns``, or under one of their ``*.domain``, or one is ``*``."""
    for pattern in patterns:
        if pattern in ("*", name):
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "...")


class HostCheckMiddleware:
    """Refuses a Host header that names none of ``hosts`` (400, when ``check_host``)
    and a WebSocket handshake from a page of another origin (403)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: Iterable[str] = LOCAL_HOSTS,
        check_host: bool = True,
        origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.hosts = frozenset(hosts)
        self.check_host = check_host
        self.origins = frozenset(origins)
        # "Any host" is about the Host header (a proxy in front checks it), not
        # about which sites' pages may open the WebSocket.
        self.origin_hosts = self.hosts - {"*"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.check_host and route_path(scope) not in UNCHECKED:
            problem = self._host_problem(host)
            if problem is not None:
                await self._refuse(scope, send, 400, problem)
                return
        origin = headers.get("origin")
        if (
            scope["type"] == "websocket"
            and origin is not None
            and not self._origin_allowed(origin, host)
        ):
            message = f"origin {_shown(origin)} is not allowed: add it to {ORIGINS_SETTING}"
            await self._refuse(scope, send, 403, message)
            return
        await self.app(scope, receive, send)

    def _host_problem(self, host: str) -> str | None:
        if not host:
            return "missing Host header"
        if not matches(host_name(host), self.hosts):
            return f"host {_shown(host)} is not allowed: add its name to {HOSTS_SETTING}"
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if "*" in self.origins or origin in self.origins:
            return True
        scheme, sep, netloc = origin.partition("://")
        if not sep or scheme not in ("http", "https"):  # "null": a sandboxed page or a file
            return False
        # The service's own pages, or a page on a trusted host (Grafana on localhost:3000).
        return netloc == host.strip().lower() or matches(host_name(netloc), self.origin_hosts)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
        if scope["type"] == "websocket":
            await deny_websocket(scope, send, status, message)
        else:
            await send_json_error(send, status, message)
