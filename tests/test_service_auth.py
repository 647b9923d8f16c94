from collections.abc import Callable

import httpx
import pytest
from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from exporter.service.auth import BearerAuthMiddleware, route_path
from tests.support import serving


async def ok(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def make_app(**tokens: str | None) -> BearerAuthMiddleware:
    app = Starlette(
        routes=[
            Route("/api/v1/monitoring/history", ok),
            Route("/metrics", ok),
            Route("/healthz", ok),
            WebSocketRoute("/api/v1/monitoring/events", ws),
        ]
    )
    return BearerAuthMiddleware(app, **tokens)


async def get(app: BearerAuthMiddleware, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get(path, headers=headers)


async def test_open_without_tokens() -> None:
    app = make_app()
    assert (await get(app, "/api/v1/monitoring/history")).status_code == 200
    assert (await get(app, "/metrics")).status_code == 200


@pytest.mark.parametrize(
    ("token", "status", "error"),
    [
        (None, 401, "missing bearer token"),
        ("wrong", 401, "invalid bearer token"),
        ("s3cret", 200, None),
    ],
)
async def test_api_token(token: str | None, status: int, error: str | None) -> None:
    response = await get(make_app(api_token="s3cret"), "/api/v1/monitoring/history", token)
    assert response.status_code == status
    if error:
        assert response.json() == {"error": error}
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_other_schemes_are_refused() -> None:
    app = make_app(api_token="s3cret")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(
            "/api/v1/monitoring/history", headers={"Authorization": "Basic czNjcmV0"}
        )
    assert response.status_code == 401


async def test_healthz_stays_open_and_metrics_has_its_own_token() -> None:
    app = make_app(api_token="api", metrics_token="scrape")
    assert (await get(app, "/healthz")).status_code == 200
    assert (await get(app, "/metrics")).status_code == 401
    assert (await get(app, "/metrics", "api")).status_code == 401
    assert (await get(app, "/metrics", "scrape")).status_code == 200
    assert (await get(app, "/api/v1/monitoring/history", "scrape")).status_code == 401


async def test_metrics_open_when_only_api_token() -> None:
    assert (await get(make_app(api_token="api"), "/metrics")).status_code == 200


async def test_websocket_needs_the_token(unused_port: Callable[[], int]) -> None:
    async with serving(make_app(api_token="s3cret"), unused_port()) as host:  # type: ignore[arg-type]
        url = f"ws://{host}/api/v1/monitoring/events"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            async with connect(url + "?token=wrong"):
                pass
        async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as conn:
            assert await conn.recv() == "hello"
        async with connect(url + "?token=s3cret") as conn:
            assert await conn.recv() == "hello"


@pytest.mark.parametrize(
    ("path", "root"),
    [
        ("/api/v1/monitoring/history", ""),
        ("/monitoring/api/v1/monitoring/history", "/monitoring"),
        ("/monitoring", "/monitoring"),
        ("/monitoring/", "/monitoring"),
        ("/monitoringx/metrics", "/monitoring"),
        ("/metrics", "/monitoring"),
        ("/proxy/monitoring/metrics", "/proxy/monitoring"),
        ("/monitoring/metrics", "/monitoring/"),
    ],
)
def test_route_path_is_the_one_the_router_matches(path: str, root: str) -> None:
    scope = {"type": "http", "path": path, "root_path": root}
    assert route_path(scope) == get_route_path(scope)


async def test_mounted_under_a_prefix_the_tokens_still_apply() -> None:
    inner = make_app(api_token="api", metrics_token="scrape")
    app = Starlette(routes=[Mount("/monitoring", app=inner)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def status(path: str, token: str | None = None) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return (await client.get(path, headers=headers)).status_code

        assert await status("/monitoring/api/v1/monitoring/history") == 401
        assert await status("/monitoring/api/v1/monitoring/history", "api") == 200
        assert await status("/monitoring/metrics") == 401
        assert await status("/monitoring/metrics", "api") == 401
        assert await status("/monitoring/metrics", "scrape") == 200
        assert await status("/monitoring/healthz") == 200


@pytest.mark.parametrize(
    "path", ["/nope", "/api", "/API/v1/monitoring/history", "/metrics/", "/healthz/x", "/"]
)
async def test_paths_it_cannot_classify_need_a_token(path: str) -> None:
    assert (await get(make_app(api_token="api"), path)).status_code == 401
    assert (await get(make_app(api_token="api"), path, "api")).status_code != 401
    assert (await get(make_app(metrics_token="scrape"), path)).status_code == 401
    assert (await get(make_app(), path)).status_code != 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/runbook"])
async def test_public_paths_need_no_token(path: str) -> None:
    app = make_app(api_token="api", metrics_token="scrape")
    assert (await get(app, path)).status_code != 401
