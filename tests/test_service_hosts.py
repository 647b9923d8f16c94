"""The Host and Origin checks: a page elsewhere (DNS rebinding, a cross-site
WebSocket) cannot read the API; the settings that widen them; the headers every
answer carries."""

from collections.abc import Callable

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from exporter.app import create_app
from exporter.cli import build_parser
from exporter.cli.options import settings_from
from exporter.service.hosts import LOCAL_HOSTS, HostCheckMiddleware, host_name, trusted_hosts
from exporter.settings import ExporterSettings
from tests.helpers.serving import serving

HISTORY = "/api/v1/monitoring/history"
EVENTS = "/api/v1/monitoring/events"


async def ok(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def make_app(accepted: list[str] | None = None, **options: object) -> HostCheckMiddleware:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        if accepted is not None:
            accepted.append(websocket.headers.get("origin", ""))
        await websocket.send_text("hello")
        await websocket.close()

    app = Starlette(
        routes=[
            Route(HISTORY, ok),
            Route("/metrics", ok),
            Route("/healthz", ok),
            Route("/readyz", ok),
            WebSocketRoute(EVENTS, ws),
        ]
    )
    return HostCheckMiddleware(app, **options)  # type: ignore[arg-type]


async def get(app: object, path: str, host: str, base: str = "http://t") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        return await client.get(path, headers={"Host": host})


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8000", "localhost"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("[::1", ""),
        ("exporter.example.com:443", "exporter.example.com"),
    ],
)
def test_the_name_in_a_host_header(header: str, name: str) -> None:
    assert host_name(header) == name


def test_trusted_hosts_are_loopback_the_address_bound_and_the_configured() -> None:
    assert trusted_hosts("127.0.0.1") == frozenset(LOCAL_HOSTS)
    assert trusted_hosts("0.0.0.0") == frozenset(LOCAL_HOSTS)
    assert trusted_hosts("::") == frozenset(LOCAL_HOSTS)
    assert trusted_hosts("10.0.0.5", ["exporter"]) == {*LOCAL_HOSTS, "10.0.0.5", "exporter"}


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"])
async def test_loopback_names_are_served(host: str) -> None:
    response = await get(make_app(), HISTORY, host)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "host", ["attacker.example:8000", "127.0.0.1.attacker.example", "localhost.", "0.0.0.0:8000"]
)
async def test_a_rebound_name_is_refused_naming_the_setting(host: str) -> None:
    response = await get(make_app(), HISTORY, host)
    assert response.status_code == 400
    assert response.json() == {
        "error": f"host {host!r} is not allowed: add its name to TASKIQ_EXPORTER_ALLOWED_HOSTS"
    }
    assert (await get(make_app(), "/metrics", host)).status_code == 400
    assert (await get(make_app(), "/no-such-path", host)).status_code == 400


async def test_the_probes_paths_are_not_checked() -> None:
    # Kubernetes sends the pod's address as Host; nothing there is private.
    assert (await get(make_app(), "/healthz", "10.1.2.3:8000")).status_code == 200
    assert (await get(make_app(), "/readyz", "10.1.2.3:8000")).status_code == 200


async def test_configured_names_and_patterns() -> None:
    app = make_app(hosts=trusted_hosts("0.0.0.0", ["exporter", "*.example.com"]))
    assert (await get(app, HISTORY, "exporter:8000")).status_code == 200
    assert (await get(app, HISTORY, "a.b.example.com")).status_code == 200
    assert (await get(app, HISTORY, "example.com")).status_code == 400
    assert (await get(app, HISTORY, "exporter.attacker.example")).status_code == 400
    assert (await get(make_app(hosts=["*"]), HISTORY, "anything")).status_code == 200
    assert (await get(make_app(check_host=False), HISTORY, "anything")).status_code == 200


async def test_mounted_or_under_a_root_path_the_check_still_applies() -> None:
    host = Starlette(routes=[Mount("/monitoring", app=make_app())])
    assert (await get(host, f"/monitoring{HISTORY}", "attacker.example")).status_code == 400
    assert (await get(host, f"/monitoring{HISTORY}", "localhost")).status_code == 200
    assert (await get(host, "/monitoring/healthz", "attacker.example")).status_code == 200


async def test_the_app_of_a_command_checks_host_an_embedded_one_does_not() -> None:
    args = build_parser().parse_args(["serve"])
    served = create_app(settings_from(args, "host", "port"))
    response = await get(served, HISTORY, "attacker.example")
    assert response.status_code == 400
    assert response.json() == {
        "error": "host 'attacker.example' is not allowed: add its name to "
        "TASKIQ_EXPORTER_ALLOWED_HOSTS"
    }
    # An application that mounts the service usually checks Host itself.
    embedded = create_app(ExporterSettings(database_url="sqlite+aiosqlite:///unused.sqlite3"))
    assert (await get(embedded, HISTORY, "app.example.com")).status_code == 503  # no lifespan
    configured = create_app(
        ExporterSettings(
            database_url="sqlite+aiosqlite:///unused.sqlite3",
            allowed_hosts="app.example.com",  # type: ignore[arg-type]
        )
    )
    assert (await get(configured, HISTORY, "attacker.example")).status_code == 400
    assert (await get(configured, HISTORY, "app.example.com")).status_code == 503


async def test_a_cross_site_websocket_is_refused_before_it_is_accepted(
    unused_port: Callable[[], int],
) -> None:
    accepted: list[str] = []
    app = make_app(accepted, origins=["https://grafana.example.com"])
    async with serving(app, unused_port()) as host:  # type: ignore[arg-type]
        url = f"ws://{host}{EVENTS}"
        for origin in ("https://attacker.example", "null", "http://127.0.0.1.attacker.example"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, origin=origin):  # type: ignore[arg-type]
                    pass
            assert refused.value.response.status_code == 403
            body = refused.value.response.body or b""
            assert b"TASKIQ_EXPORTER_ALLOWED_ORIGINS" in body
        assert accepted == []
        origins = [
            f"http://{host}",  # the service's own page
            "http://localhost:3000",  # a page on a trusted host
            "https://grafana.example.com",  # configured
        ]
        for origin in [None, *origins]:  # None: not a browser
            async with connect(url, origin=origin) as conn:  # type: ignore[arg-type]
                assert await conn.recv() == "hello"
        assert accepted == ["", *origins]


async def test_any_host_does_not_mean_any_origin(unused_port: Callable[[], int]) -> None:
    app = make_app(hosts=["*"])
    async with serving(app, unused_port()) as host:  # type: ignore[arg-type]
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://{host}{EVENTS}", origin="https://attacker.example"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403


def test_hosts_and_origins_settings_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKIQ_EXPORTER_ALLOWED_HOSTS", "Exporter, [::1],*.example.com,")
    monkeypatch.setenv("TASKIQ_EXPORTER_ALLOWED_ORIGINS", "https://Grafana.example.com/")
    settings = ExporterSettings()
    assert settings.allowed_hosts == ("exporter", "::1", "*.example.com")
    assert settings.allowed_origins == ("https://grafana.example.com",)
    monkeypatch.delenv("TASKIQ_EXPORTER_ALLOWED_HOSTS")
    assert ExporterSettings().allowed_hosts is None


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("allowed_hosts", "http://exporter", "is not a host name"),
        ("allowed_hosts", "exporter:8000", "without a scheme or a port"),
        ("allowed_hosts", "a/b", "is not a host name"),
        ("allowed_origins", "grafana.example.com", "is not an origin"),
        ("allowed_origins", "ftp://grafana.example.com", "https://grafana.example.com"),
        ("allowed_origins", "https://grafana.example.com/path", "is not an origin"),
    ],
)
def test_malformed_hosts_and_origins_are_refused(field: str, value: str, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        ExporterSettings(**{field: value})  # type: ignore[arg-type]
    assert expected in str(info.value)


async def test_every_answer_says_no_store_and_nosniff() -> None:
    settings = ExporterSettings(
        database_url="sqlite+aiosqlite:///unused.sqlite3",
        allowed_hosts=(),
        api_token="a-token-of-20-chars!",  # type: ignore[arg-type]
    )
    app = create_app(settings)
    for path, host, status in [
        ("/healthz", "localhost", 200),
        (HISTORY, "localhost", 401),
        (HISTORY, "attacker.example", 400),
        ("/runbook", "localhost", 200),
    ]:
        response = await get(app, path, host)
        assert response.status_code == status, path
        assert response.headers.get_list("cache-control") == ["no-store"], path
        assert response.headers.get_list("x-content-type-options") == ["nosniff"], path
