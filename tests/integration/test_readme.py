"""The README's examples, run as a user would: its curl | jq lines against a live
service, its Python snippets against a real store, its export commands."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import PIPE

import httpx
import pytest
from starlette.applications import Starlette
from taskiq import InMemoryBroker

from exporter import MonitoringMiddleware
from exporter.service.app import create_app
from exporter.settings import ExporterSettings
from tests.helpers.rows import insert_logs, stored_row
from tests.helpers.serving import serving

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
DOCUMENTED = "http://127.0.0.1:8000"
BLOCKS = [(m.group(1), m.group(2)) for m in FENCE.finditer(README)]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: apt-get install {name}")
        pytest.skip(f"{name} is not installed")
    return str(path)


def curl_lines() -> list[str]:
    return [
        line
        for lang, text in BLOCKS
        if lang == "sh"
        for line in text.splitlines()
        if line.startswith("curl ")
    ]


def python_blocks() -> list[str]:
    return [text for lang, text in BLOCKS if lang == "python"]


def test_the_readme_has_the_examples_these_tests_run() -> None:
    assert len(curl_lines()) >= 3
    assert any("/history/task/" in line for line in curl_lines())
    assert len(python_blocks()) >= 2
    assert README.startswith("# taskiq-exporter")
    assert "./scripts/demo.sh" in README.split("##")[0]
    assert "./scripts/test.sh" in README.split("##")[0]


async def test_curl_examples_answer_what_their_jq_reads(
    pg_store: str, unused_port: Callable[[], int]
) -> None:
    _tool("curl")
    _tool("jq")
    now = datetime.now(UTC)
    failed = stored_row(
        task_name="demo:score_message",
        status="failed",
        created_at=now - timedelta(minutes=1),
        task_id="readme-task",
        error_message="ValueError: message has no text to score",
        error_traceback="Traceback (most recent call last):\nValueError: no text\n",
    )
    retried = stored_row(
        task_name="demo:score_message", created_at=now, task_id="readme-task", attempt=2
    )
    await insert_logs(pg_store, [failed, retried])
    app = create_app(ExporterSettings(database_url=pg_store, maintenance=False))
    async with serving(app, unused_port()) as host:
        base = f"http://{host}"
        async with httpx.AsyncClient(base_url=base) as client:
            page = (await client.get("/api/v1/monitoring/history?status=failed")).json()
        row_id = page["items"][0]["id"]
        for line in curl_lines():
            command = line.split(" # ")[0]
            command = command.replace(DOCUMENTED, base)
            command = command.replace("/history/42", f"/history/{row_id}")
            command = command.replace("TASK_ID", "readme-task")
            # Not subprocess.run: the server answers on this test's event loop.
            proc = await asyncio.create_subprocess_exec(
                "bash", "-o", "pipefail", "-c", command, stdout=PIPE, stderr=PIPE
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, (command, err.decode())
            assert out.strip(), command
            assert out.strip() != b"null", (command, "the key jq reads is missing")


def _database_urls(block: str) -> list[str]:
    return re.findall(r'"(postgresql[^"]*|sqlite[^"]*)"', block)


async def test_the_middleware_snippet_records_a_task(pg_store: str) -> None:
    block = next(b for b in python_blocks() if "add_middlewares" in b)
    (documented,) = _database_urls(block)
    broker = InMemoryBroker(await_inplace=True)
    exec(block.replace(documented, pg_store), {"broker": broker})
    (middleware,) = [m for m in broker.middlewares if isinstance(m, MonitoringMiddleware)]

    @broker.task(task_name="readme:add")
    async def add(a: int, b: int) -> int:
        return a + b

    await broker.startup()
    result = await (await add.kiq(1, 2)).wait_result(timeout=10)
    await broker.shutdown()
    assert result.return_value == 3
    assert (
        middleware.registry.get_sample_value(
            "taskiq_tasks_completed_total", {"task_name": "readme:add", "status": "success"}
        )
        == 1.0
    )


async def test_the_embedding_snippet_serves_under_its_mount(pg_store: str) -> None:
    block = next(b for b in python_blocks() if "Mount(" in b)
    (documented,) = _database_urls(block)
    scope: dict[str, object] = {}
    exec(block.replace(documented, pg_store), scope)
    host = scope["app"]
    assert isinstance(host, Starlette)
    async with host.router.lifespan_context(host):
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            assert (await client.get("/monitoring/healthz")).status_code == 200
            history = await client.get("/monitoring/api/v1/monitoring/history")
            assert history.status_code == 200, history.text


def test_the_export_commands_run(tmp_path: Path) -> None:
    exporter = shutil.which("taskiq-exporter") or str(ROOT / ".venv" / "bin" / "taskiq-exporter")
    lines = [
        line
        for lang, text in BLOCKS
        if lang == "sh"
        for line in text.splitlines()
        if line.startswith("taskiq-exporter ") and " export " in line
    ]
    assert len(lines) == 2
    for line in lines:
        args = shlex.split(line.split(" # ")[0])[1:]
        args = [str(tmp_path / a.lstrip("/")) if a.startswith("/") else a for a in args]
        result = subprocess.run(
            [exporter, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, (line, result.stderr)
