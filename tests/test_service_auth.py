import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from exporter.cli.options import settings_message
from exporter.service.app import create_app, lifespan_of
from exporter.service.auth import (
    BearerAuthMiddleware,
    QueryStringFilter,
    hide_query_strings,
    route_path,
)
from exporter.settings import ExporterSettings
from tests.helpers.serving import serving


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


# Auth fails closed: an empty token is a mistake, never "no token".


@pytest.mark.parametrize("field", ["api_token", "metrics_token"])
@pytest.mark.parametrize("empty", ["", "   ", "\n"])
def test_an_empty_token_is_refused_by_the_middleware(field: str, empty: str) -> None:
    with pytest.raises(ValueError, match=f"{field} is empty"):
        make_app(**{field: empty})


@pytest.mark.parametrize("empty", ["", "  \t"])
def test_an_empty_token_setting_is_a_configuration_error(
    empty: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKIQ_EXPORTER_API_TOKEN", empty)
    with pytest.raises(ValidationError) as info:
        ExporterSettings()
    assert settings_message(info.value) == (
        "invalid TASKIQ_EXPORTER_API_TOKEN: empty or blank: set a token of at least 16 "
        "characters (python3 -c 'import secrets; print(secrets.token_urlsafe(32))' prints "
        "one), or unset the variable to serve without one"
    )


def test_a_token_is_read_without_surrounding_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a-long-enough-token-1234\n")
    settings = ExporterSettings(api_token_file=path, metrics_token=" scrape-token-12345 ")  # type: ignore[arg-type]
    assert settings.api_token is not None
    assert settings.metrics_token is not None
    assert settings.api_token.get_secret_value() == "a-long-enough-token-1234"
    assert settings.metrics_token.get_secret_value() == "scrape-token-12345"
    assert settings.short_tokens() == []
    assert ExporterSettings(api_token="short").short_tokens() == ["api_token"]  # type: ignore[arg-type]


def test_token_file_errors_name_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def message(**env: str) -> str:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError) as info:
            ExporterSettings()
        for name in env:
            monkeypatch.delenv(name)
        return settings_message(info.value)

    missing = tmp_path / "missing"
    assert message(TASKIQ_EXPORTER_METRICS_TOKEN_FILE=str(missing)) == (
        f"invalid TASKIQ_EXPORTER_METRICS_TOKEN_FILE: cannot read {missing}: "
        "No such file or directory"
    )
    blank = tmp_path / "blank"
    blank.write_text("\n")
    assert message(TASKIQ_EXPORTER_API_TOKEN_FILE=str(blank)).startswith(
        f"invalid TASKIQ_EXPORTER_API_TOKEN_FILE: the token in {blank} is empty or blank"
    )
    token = tmp_path / "token"
    token.write_text("a-long-enough-token-1234")
    both = message(TASKIQ_EXPORTER_API_TOKEN_FILE=str(token), TASKIQ_EXPORTER_API_TOKEN="x" * 20)
    assert both == (
        "invalid TASKIQ_EXPORTER_SETTINGS: both TASKIQ_EXPORTER_API_TOKEN and a token file "
        "(TASKIQ_EXPORTER_API_TOKEN_FILE or --api-token-file) are set: keep one"
    )


async def test_a_token_set_as_a_plain_string_still_protects(sqlite_store: str) -> None:
    settings = ExporterSettings(database_url=sqlite_store)
    # model_copy skips validation: a str where a SecretStr belongs must not mean "open".
    app = create_app(settings.model_copy(update={"api_token": "a-plain-string-token"}))
    async with lifespan_of(app):
        assert (await get(app, "/api/v1/monitoring/history")).status_code == 401  # type: ignore[arg-type]
        response = await get(app, "/api/v1/monitoring/history", "a-plain-string-token")  # type: ignore[arg-type]
        assert response.status_code == 200


async def test_a_short_token_is_warned_about(
    sqlite_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ExporterSettings(database_url=sqlite_store, metrics_token="short")  # type: ignore[arg-type]
    app = create_app(settings)
    with caplog.at_level(logging.WARNING, logger="exporter.service.app"):
        async with lifespan_of(app):
            pass
    assert [r.getMessage() for r in caplog.records] == [
        "TASKIQ_EXPORTER_METRICS_TOKEN is shorter than 16 characters: use a longer one "
        "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))' prints one)"
    ]


# Tokens do not leak.


def test_the_query_string_filter_hides_the_token() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5555", "/api/v1/monitoring/events?since=x&token=s3cret"), None,
    )  # fmt: skip
    assert QueryStringFilter().filter(record)
    assert record.getMessage() == (
        '127.0.0.1:5555 - "WebSocket /api/v1/monitoring/events?[hidden]" [accepted]'
    )


def test_hide_query_strings_installs_one_filter_per_logger() -> None:
    logger = logging.getLogger("tests.hide-query-strings")
    hide_query_strings(("tests.hide-query-strings",))
    hide_query_strings(("tests.hide-query-strings",))
    assert [type(f) for f in logger.filters] == [QueryStringFilter]
    logger.removeFilter(logger.filters[0])


def test_the_database_password_is_not_in_the_settings_repr() -> None:
    settings = ExporterSettings(database_url="postgresql://u:hunter2@h/d")
    assert settings.database_url == "postgresql+asyncpg://u:hunter2@h/d"
    for text in (repr(settings), str(settings)):
        assert "hunter2" not in text
        assert "database_url='postgresql+asyncpg://u:***@h/d'" in text
