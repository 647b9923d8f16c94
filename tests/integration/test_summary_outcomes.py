"""The summary's two success rates (per attempt, and per task where the final attempt
decides), every ``number`` of the OpenAPI document written as a JSON float in real
responses, and the examples of docs/api.md against the live service."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
from websockets.asyncio.client import connect

from exporter.events import EventHub
from exporter.service.schemas import MonitoringMetricsResponse, TaskEventMessage
from tests.helpers.rows import insert_logs, stored_row
from tests.helpers.serving import running_service, serving

pytestmark = pytest.mark.integration
API = "/api/v1/monitoring"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def attempts(task_name: str, task_id: str, *steps: tuple[str, float]) -> list[dict[str, Any]]:
    """One row per (status, minutes ago), attempts numbered from 1; a failed attempt
    that another follows was retried (the middleware marks it so)."""
    now = datetime.now(UTC)
    return [
        stored_row(
            retried=n < len(steps) if status == "failed" else None,
            task_name=task_name,
            task_id=task_id,
            attempt=n,
            status=status,
            created_at=now - timedelta(minutes=ago),
            duration_ms=100.0 if status == "success" else 250.0,
            error_message="TimeoutError: LLM request timed out" if status == "failed" else None,
            error_traceback="Traceback (most recent call last):\n  ...\nTimeoutError"
            if status == "failed"
            else None,
        )
        for n, (status, ago) in enumerate(steps, start=1)
    ]


def retry_rows() -> list[dict[str, Any]]:
    return [
        # Failed twice, then succeeded: 2 failed attempts + 1 success, 1 task succeeded.
        *attempts("app:flaky", "f1", ("failed", 50), ("failed", 40), ("success", 30)),
        # Failed on every attempt: 1 task failed (its final attempt).
        *attempts("app:flaky", "f2", ("failed", 20), ("failed", 10)),
        # Retried and not started yet: its outcome is not decided.
        *attempts("app:flaky", "f3", ("failed", 5), ("pending", 4)),
        # First attempt before the 24 h window, the final one in it.
        *attempts("app:flaky", "f4", ("failed", 30 * 60), ("success", 3 * 60)),
        *attempts("app:steady", "s1", ("success", 90)),
        *attempts("app:steady", "s2", ("success", 70)),
        *attempts("app:steady", "s3", ("success", 2)),
        *attempts("app:broken", "b1", ("failed", 25)),
        *attempts("app:broken", "b2", ("failed", 15)),
    ]


@pytest.fixture
async def api(store_url: str) -> Any:
    await insert_logs(store_url, retry_rows())
    async with running_service(
        store_url, hub=EventHub(), events_max_replay_age_seconds=40 * 3600
    ) as (app, client):
        yield app, client


async def test_success_rate_per_attempt_and_outcome_per_task(api: Any) -> None:
    _app, client = api
    response = await client.get(f"{API}/metrics")
    assert response.status_code == 200
    body = MonitoringMetricsResponse.model_validate(response.json())
    by_name = {m.task_name: m for m in body.metrics}
    flaky = by_name["app:flaky"]
    # f4's first attempt is older than the window: 2 successes, 5 failures, 1 pending.
    assert (flaky.success, flaky.failed, flaky.pending, flaky.total_executions) == (2, 5, 1, 8)
    assert flaky.success_rate == pytest.approx(2 / 7)
    assert (flaky.tasks_succeeded, flaky.tasks_failed) == (2, 1)
    assert flaky.outcome_success_rate == pytest.approx(2 / 3)
    steady, broken = by_name["app:steady"], by_name["app:broken"]
    assert (steady.success_rate, steady.outcome_success_rate) == (1.0, 1.0)
    assert (broken.success_rate, broken.outcome_success_rate) == (0.0, 0.0)
    assert (broken.tasks_succeeded, broken.tasks_failed) == (0, 2)
    total = body.overall
    assert (total.success, total.failed, total.pending, total.total_executions) == (5, 7, 1, 13)
    assert total.success_rate == pytest.approx(5 / 12)
    assert (total.tasks_succeeded, total.tasks_failed) == (5, 3)
    assert total.outcome_success_rate == pytest.approx(5 / 8)
    assert total.avg_duration_ms == pytest.approx(100.0)

    narrow = MonitoringMetricsResponse.model_validate(
        (await client.get(f"{API}/metrics", params={"time_window": 1})).json()
    )
    # In the last hour: f1, f2, f3, s3, b1, b2 (f4's success is 3 h old).
    assert (narrow.overall.tasks_succeeded, narrow.overall.tasks_failed) == (2, 3)
    assert narrow.overall.success_rate == pytest.approx(2 / 9)


async def test_empty_window_has_zeros_and_nulls(store_url: str) -> None:
    async with running_service(store_url) as (_app, client):
        body = (await client.get(f"{API}/metrics")).json()
    assert body["metrics"] == []
    assert body["overall"]["total_executions"] == 0
    for rate in ("success_rate", "outcome_success_rate", "avg_duration_ms"):
        assert body["overall"][rate] is None


# Numbers as floats ------------------------------------------------------------------


class FloatLiteral(float):
    """A JSON number written with a fraction or an exponent (``1.0``, ``2e-05``)."""


class IntLiteral(int):
    """A JSON number written as an integer (``1``)."""


def literal_json(text: str) -> Any:
    return json.loads(text, parse_float=FloatLiteral, parse_int=IntLiteral)


Defs = dict[str, Any]


def _variant(value: Any, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The schema that applies to ``value``: anyOf resolved (None for a null)."""
    if "anyOf" not in schema:
        return schema
    if value is None:
        assert any(v.get("type") == "null" for v in schema["anyOf"]), schema
        return None
    variants = [v for v in schema["anyOf"] if v.get("type") != "null"]
    assert len(variants) == 1, f"extend the walk for {schema}"
    return dict(variants[0])


def numbers(
    value: Any, schema: dict[str, Any], defs: Defs, at: str = "$", owner: str = "?"
) -> Iterator[tuple[str, str, Any]]:
    """(schema position, JSON path, value) of every non-null value the schema declares
    a number; asserts integers were written as integers on the way."""
    resolved = _variant(value, schema)
    if resolved is None:
        return
    if "$ref" in resolved:
        name = resolved["$ref"].rsplit("/", 1)[-1]
        yield from numbers(value, defs[name], defs, at, name)
        return
    kind = resolved.get("type")
    if kind == "object":
        assert isinstance(value, dict), at
        for key, sub in resolved.get("properties", {}).items():
            if key in value:
                yield from numbers(value[key], sub, defs, f"{at}.{key}", f"{owner}.{key}")
    elif kind == "array":
        assert isinstance(value, list), at
        for i, item in enumerate(value):
            yield from numbers(item, resolved["items"], defs, f"{at}[{i}]", f"{owner}[]")
    elif kind == "number":
        yield owner, at, value
    elif kind == "integer":
        assert type(value) is IntLiteral, (at, value)


def declared_numbers(schema: dict[str, Any], defs: Defs, seen: set[str] | None = None) -> set[str]:
    """Every schema position (``Model.field``) that declares a number, through $refs."""
    seen = set() if seen is None else seen
    out: set[str] = set()
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            return out
        seen.add(name)
        model = defs[name]
        for key, sub in model.get("properties", {}).items():
            variants = sub.get("anyOf", [sub])
            if any(v.get("type") == "number" for v in variants):
                out.add(f"{name}.{key}")
            for v in variants:
                out |= declared_numbers(v, defs, seen)
                out |= declared_numbers(v.get("items", {}), defs, seen)
    return out


async def replayed_messages(host: str, since: datetime, count: int) -> list[str]:
    query = urlencode({"since": since.isoformat()})
    messages: list[str] = []
    async with connect(f"ws://{host}{API}/events?{query}") as ws:
        while len(messages) < count:
            message = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(message, str)
            messages.append(message)
    return messages


async def test_every_number_is_a_json_float(api: Any, unused_port: Callable[[], int]) -> None:
    app, client = api
    spec = (await client.get("/openapi.json")).json()
    defs: Defs = spec["components"]["schemas"]
    history = (await client.get(f"{API}/history", params={"page_size": 200})).json()
    finished = next(i for i in history["items"] if i["duration_ms"] is not None)
    values = {"id": finished["id"], "task_id": quote(finished["task_id"], safe="")}
    found: list[tuple[str, str, Any]] = []
    declared: set[str] = set()
    walked = []
    for path, item in spec["paths"].items():
        content = item["get"]["responses"]["200"].get("content", {})
        if "application/json" not in content:
            continue  # /metrics: Prometheus text
        schema = content["application/json"]["schema"]
        response = await client.get(path.format(**values))
        assert response.status_code == 200, (path, response.text)
        found += numbers(literal_json(response.text), schema, defs)
        declared |= declared_numbers(schema, defs)
        walked.append(path)
    assert f"{API}/metrics" in walked
    assert f"{API}/history/task/{{task_id}}" in walked

    # The events WebSocket: one replayed message per stored row.
    event_schema = {"$ref": "#/components/schemas/TaskEventMessage"}
    async with serving(app, unused_port()) as host:
        since = datetime.now(UTC) - timedelta(hours=31)
        for message in await replayed_messages(host, since, len(retry_rows())):
            TaskEventMessage.model_validate_json(message)
            found += numbers(literal_json(message), event_schema, defs)
    declared |= declared_numbers(event_schema, defs)

    not_floats = [(at, v) for _, at, v in found if type(v) is not FloatLiteral]
    assert not_floats == []
    # /readyz has a replica's fields only with a read replica: test_replica.py checks them.
    declared = {d for d in declared if not d.startswith("ReplicaReadiness.")}
    assert declared <= {owner for owner, _, _ in found}, "a number field never seen non-null"
    # The values a careless encoder would write as 1 and 0 were among them.
    assert {1.0, 0.0, 100.0} <= {float(v) for _, _, v in found}


# docs/api.md ------------------------------------------------------------------------

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
CURL_URL = re.compile(r"curl [^\n]*?'?(http://[^'\s]+)")


def doc_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block of docs/api.md, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(DOCS.read_text(encoding="utf-8"))]


def doc_examples(lang: str) -> list[tuple[str, str]]:
    """(path and query, answer) of every curl example answered by a ``lang`` block (not
    those piped through jq: their output is not the response)."""
    out = []
    for (request_lang, request), (answer_lang, answer) in itertools.pairwise(doc_blocks()):
        if request_lang == "sh" and answer_lang == lang and "| jq" not in request:
            url = CURL_URL.search(request)
            assert url is not None, request
            parts = urlsplit(url.group(1))
            out.append((parts.path + (f"?{parts.query}" if parts.query else ""), answer))
    return out


def shape(body: Any) -> dict[str, Any]:
    """The keys of an object and of the objects one level down (a list: its first item)."""
    if not isinstance(body, dict):
        return {"": type(body).__name__}
    out: dict[str, Any] = {"": sorted(body)}
    for key, value in body.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = value[0]
        if isinstance(value, dict):
            out[key] = sorted(value)
    return out


def docs_rows() -> list[dict[str, Any]]:
    name = "demo:extract_knowledge_from_messages"
    return [
        *attempts(name, "d1", ("failed", 30), ("failed", 29), ("success", 28)),
        *attempts(name, "d2", ("failed", 20), ("success", 19)),
        *attempts(name, "d3", ("failed", 10)),
        *attempts("demo:score_message", "d4", ("success", 5)),
    ]


async def test_docs_examples_match_live_responses(pg_store: str) -> None:
    await insert_logs(pg_store, docs_rows())
    examples = doc_examples("json")
    async with running_service(pg_store) as (_app, client):
        failed = (await client.get(f"{API}/history", params={"status": "failed"})).json()
        row_id = failed["items"][0]["id"]
        checked = set()
        for path, documented in examples:
            path = re.sub(r"/history/\d+$", f"/history/{row_id}", path)
            path = re.sub(r"/history/task/[^/?]+$", "/history/task/d1", path)
            live = (await client.get(path)).json()
            assert shape(json.loads(documented)) == shape(live), path
            checked.add(urlsplit(path).path)
        spec = (await client.get("/openapi.json")).json()
    text = DOCS.read_text(encoding="utf-8")
    for path in spec["paths"]:
        assert f"## GET {path}\n" in text, f"docs/api.md has no section for {path}"
        content = spec["paths"][path]["get"]["responses"]["200"].get("content", {})
        if "application/json" in content:
            template = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path))
            assert any(re.fullmatch(template, p) for p in checked), f"no example of {path}"
    assert "## WS /api/v1/monitoring/events\n" in text


async def test_docs_event_and_401_blocks(pg_store: str) -> None:
    events = 0
    for lang, text in doc_blocks():
        if lang == "jsonl":
            for line in text.splitlines():
                TaskEventMessage.model_validate_json(line)
                events += 1
        elif lang == "json" and '"task_event"' in text:
            TaskEventMessage.model_validate_json(text)
            events += 1
    assert events >= 3
    answers = doc_examples("http")
    assert answers
    async with running_service(pg_store, api_token="docs-token") as (_app, client):
        for path, answer in answers:
            head, _, body = answer.partition("\n\n")
            status, *headers = head.splitlines()
            response = await client.get(path)
            assert response.status_code == int(status.split()[1]), path
            assert response.json() == json.loads(body), path
            for line in headers:
                name, _, value = line.partition(": ")
                assert response.headers[name] == value, path
