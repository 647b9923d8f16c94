"""``taskiq-exporter serve`` as an attacker meets it, against PostgreSQL: no token in
``ps`` or the log, a DNS-rebinding page and a cross-site WebSocket refused, an open
API only on loopback unless asked for, and integers beyond BIGINT answered with a
400, not a 500 and a traceback in the log."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.test_cli import EXE, cli, one_line_error

pytestmark = pytest.mark.integration

API = "/api/v1/monitoring"
TOKEN = "tok-" + "7" * 28


@dataclass
class Served:
    base: str
    pid: int
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text()


@contextmanager
def serve(tmp_path: Path, database_url: str, port: int, *argv: str, **env: str) -> Iterator[Served]:
    """The installed command, its output (stdout and stderr) in a file."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TASKIQ_EXPORTER_")}
    environ.update(
        TASKIQ_EXPORTER_DATABASE_URL=database_url,
        TASKIQ_EXPORTER_MAINTENANCE="false",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        **env,
    )
    log_file = tmp_path / f"serve-{port}.log"
    cmd = [str(EXE), "serve", "--port", str(port), *argv]
    with log_file.open("w") as out:
        proc = subprocess.Popen(cmd, env=environ, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the service did not start:\n{log_file.read_text()}")
            time.sleep(0.1)
        yield Served(base, proc.pid, log_file)
    finally:
        proc.terminate()
        proc.wait(30)


async def ws_status(url: str, **kwargs: object) -> int:
    """The status of a WebSocket handshake: 101 when accepted."""
    try:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_the_token_is_in_neither_ps_nor_the_log(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    with serve(tmp_path, pg_store, unused_port(), "--api-token-file", str(token_file)) as served:
        cmdline = Path(f"/proc/{served.pid}/cmdline").read_bytes().decode()
        assert "--api-token-file" in cmdline
        assert TOKEN not in cmdline
        url = served.base.replace("http", "ws") + f"{API}/events"
        assert await ws_status(f"{url}?since=2026-01-01T00:00:00&token={TOKEN}") == 101
        assert await ws_status(f"{url}?token=wrong-{TOKEN}") == 401
        assert await ws_status(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) == 101
        async with httpx.AsyncClient(base_url=served.base) as client:
            assert (await client.get(f"{API}/tasks")).status_code == 401
            authorized = {"Authorization": f"Bearer {TOKEN}"}
            assert (await client.get(f"{API}/tasks", headers=authorized)).status_code == 200
    log = served.log()
    # uvicorn logs each handshake; the query string is cut off.
    assert f'"WebSocket {API}/events?[hidden]" [accepted]' in log
    assert f'"WebSocket {API}/events?[hidden]" 401' in log
    assert TOKEN not in log
    assert "token=" not in log
    assert "the API is open" not in log


async def test_a_dns_rebinding_page_cannot_read_the_open_api(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    port = unused_port()
    with serve(tmp_path, pg_store, port, TASKIQ_EXPORTER_ALLOWED_HOSTS="exporter.test") as served:
        async with httpx.AsyncClient(base_url=served.base) as client:
            mine = await client.get(f"{API}/tasks")
            assert mine.status_code == 200
            assert mine.headers["cache-control"] == "no-store"
            assert mine.headers["x-content-type-options"] == "nosniff"
            for host in (f"localhost:{port}", f"[::1]:{port}", f"exporter.test:{port}"):
                answer = await client.get(f"{API}/tasks", headers={"Host": host})
                assert answer.status_code == 200, host
            # The attacker's name, rebound to 127.0.0.1, is what the browser sends.
            rebound = await client.get(f"{API}/history", headers={"Host": f"attacker.test:{port}"})
            assert rebound.status_code == 400
            assert rebound.json() == {
                "error": f"host 'attacker.test:{port}' is not allowed: add its name to "
                "TASKIQ_EXPORTER_ALLOWED_HOSTS"
            }
            assert rebound.headers["cache-control"] == "no-store"
            probe = await client.get("/healthz", headers={"Host": f"10.0.0.7:{port}"})
            assert probe.status_code == 200
        url = f"ws://127.0.0.1:{port}{API}/events"
        assert await ws_status(url, origin="http://attacker.test") == 403
        assert await ws_status(url, origin=f"http://127.0.0.1:{port}") == 101
        assert await ws_status(url) == 101
    log = served.log()
    assert f"the API is open: whoever reaches 127.0.0.1:{port}" in log
    assert f'"WebSocket {API}/events" 403' in log
    assert "ERROR" not in log


def cursor_of(row_id: int) -> str:
    raw = json.dumps(["2026-01-01T00:00:00+00:00", row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_integers_beyond_bigint_are_400_without_an_error_in_the_log(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    huge = [2**63, 10**60]
    paths = [f"{API}/history?cursor={cursor_of(n)}" for n in (*huge, 0, -1)]
    paths += [f"{API}/history/{n}" for n in (*huge, 0, "9" * 5000)]
    paths += [f"{API}/history?{name}={n}" for name in ("page", "page_size") for n in huge]
    paths += [f"{API}/metrics?time_window={n}" for n in huge]
    with serve(tmp_path, pg_store, unused_port()) as served:
        async with httpx.AsyncClient(base_url=served.base) as client:
            for path in paths:
                response = await client.get(path)
                assert response.status_code == 400, (path, response.text)
                message = response.json()["error"]
                name = path.rpartition("?")[2].partition("=")[0] if "?" in path else "id"
                assert name in message, (path, message)
            largest = cursor_of(2**63 - 1)
            assert (await client.get(f"{API}/history?cursor={largest}")).status_code == 200
    log = served.log()
    assert "ERROR" not in log
    assert "Traceback" not in log


def test_an_open_api_on_a_network_address_needs_insecure_no_auth(
    sqlite_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    run = cli("serve", "--host", "0.0.0.0", "--port", "1", "--database-url", sqlite_store)
    assert run.returncode == 2
    assert one_line_error(run, "serve") == (
        "taskiq-exporter serve: --host 0.0.0.0 would serve the API without a token to the "
        "network: set TASKIQ_EXPORTER_API_TOKEN (or TASKIQ_EXPORTER_API_TOKEN_FILE) or pass "
        "--insecure-no-auth"
    )
    port = unused_port()
    with serve(tmp_path, sqlite_store, port, "--host", "0.0.0.0", "--insecure-no-auth") as served:
        assert httpx.get(f"{served.base}{API}/tasks").status_code == 200
    log = served.log()
    assert f"the API is open: whoever reaches 0.0.0.0:{port}" in log
    assert "add the names clients use" in log
    assert "TASKIQ_EXPORTER_ALLOWED_HOSTS" in log


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (
            ["--api-token", TOKEN],
            {},
            "--api-token is not accepted: a token on the command line shows in ps and in the "
            "shell's history; set TASKIQ_EXPORTER_API_TOKEN or pass --api-token-file PATH",
        ),
        (
            ["--metrics-token", TOKEN],
            {},
            "--metrics-token is not accepted: a token on the command line shows in ps and in "
            "the shell's history; set TASKIQ_EXPORTER_METRICS_TOKEN or pass "
            "--metrics-token-file PATH",
        ),
        (
            [],
            {"TASKIQ_EXPORTER_API_TOKEN": ""},
            "invalid TASKIQ_EXPORTER_API_TOKEN: empty or blank",
        ),
        (
            [],
            {"TASKIQ_EXPORTER_METRICS_TOKEN": "  "},
            "invalid TASKIQ_EXPORTER_METRICS_TOKEN: empty",
        ),
        (
            [],
            {"TASKIQ_EXPORTER_API_TOKEN": "fifteen-chars!!"},
            "invalid TASKIQ_EXPORTER_API_TOKEN: a token must be at least 16 characters",
        ),
        (
            ["--allowed-hosts", "http://exporter"],
            {},
            "invalid --allowed-hosts: 'http://exporter' is not a host name",
        ),
    ],
)
def test_token_mistakes_are_one_line_and_exit_2(
    argv: list[str], env: dict[str, str], expected: str
) -> None:
    run = cli("serve", "--port", "1", *argv, env=env)
    assert run.returncode == 2
    line = one_line_error(run, "serve")
    assert line.startswith(f"taskiq-exporter serve: {expected}")
    assert TOKEN not in line
    assert "fifteen-chars!!" not in line


def test_a_short_token_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("short\n")
    run = cli("serve", "--port", "1", "--metrics-token-file", str(path))
    assert run.returncode == 2
    assert one_line_error(run, "serve").startswith(
        "taskiq-exporter serve: invalid --metrics-token-file: a token must be at least 16"
    )
