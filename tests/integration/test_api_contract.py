"""Contract tests of the JSON API (seed T005-T009 and issue 3), on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from exporter import __version__
from exporter.service.schemas import (
    ErrorResponse,
    MonitoringMetricsResponse,
    TaskAttemptsResponse,
    TaskExecutionLogDetail,
    TaskHistoryResponse,
    TaskNamesResponse,
)
from tests.helpers.rows import insert_logs, stored_row
from tests.helpers.serving import running_service

pytestmark = pytest.mark.integration
API = "/api/v1/monitoring"
NOW = datetime.now(UTC)


def sample_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(30):
        rows.append(
            stored_row(
                task_name="score_message_task",
                status="failed" if i % 3 == 0 else "success",
                created_at=NOW - timedelta(minutes=5 * i + 1),
                duration_ms=100.0 if i % 3 else 5_000.0,
                error_message="ValueError: boom" if i % 3 == 0 else None,
                error_traceback="Traceback (most recent call last):\n  ...\nValueError: boom"
                if i % 3 == 0
                else None,
            )
        )
    rows.append(
        stored_row(task_name="send_email", status="running", created_at=NOW - timedelta(minutes=2))
    )
    rows.append(
        stored_row(task_name="send_email", status="pending", created_at=NOW - timedelta(minutes=1))
    )
    rows.append(stored_row(task_name="old_task", created_at=NOW - timedelta(days=10)))
    return rows


@pytest.fixture
async def api(store_url: str) -> Any:
    await insert_logs(store_url, sample_rows())
    async with running_service(store_url) as (_app, client):
        yield client


async def test_get_metrics_returns_200_with_valid_schema(api: Any) -> None:
    response = await api.get(f"{API}/metrics")
    assert response.status_code == 200
    body = MonitoringMetricsResponse.model_validate(response.json())
    assert body.time_window_hours == 24
    by_name = {m.task_name: m for m in body.metrics}
    assert set(by_name) == {"score_message_task", "send_email"}
    score = by_name["score_message_task"]
    assert (score.success, score.failed, score.total_executions) == (20, 10, 30)
    assert score.avg_duration_ms == pytest.approx(100.0)  # failed runs (5 s) do not count
    assert score.success_rate == pytest.approx(20 / 30)
    email = by_name["send_email"]
    assert (email.pending, email.running, email.success_rate) == (1, 1, None)


async def test_get_metrics_with_time_window_param(api: Any) -> None:
    response = await api.get(f"{API}/metrics", params={"time_window": 48})
    assert response.status_code == 200
    assert response.json()["time_window_hours"] == 48
    wide = (await api.get(f"{API}/metrics", params={"time_window": 720})).json()
    assert "old_task" in {m["task_name"] for m in wide["metrics"]}
    narrow = (await api.get(f"{API}/metrics", params={"time_window": 1})).json()
    score = next(m for m in narrow["metrics"] if m["task_name"] == "score_message_task")
    assert score["total_executions"] == 12  # created in the last hour: minutes 1..56


async def test_get_history_returns_200_with_pagination(api: Any) -> None:
    response = await api.get(f"{API}/history", params={"page": 1, "page_size": 10})
    assert response.status_code == 200
    body = TaskHistoryResponse.model_validate(response.json())
    assert (body.total_count, body.page, body.page_size, body.total_pages) == (33, 1, 10, 4)
    assert len(body.items) == 10
    stamps = [i.created_at for i in body.items]
    assert stamps == sorted(stamps, reverse=True)
    assert body.next_cursor is not None
    last = (await api.get(f"{API}/history", params={"page": 4, "page_size": 10})).json()
    assert len(last["items"]) == 3
    assert last["next_cursor"] is None
    beyond = (await api.get(f"{API}/history", params={"page": 5, "page_size": 10})).json()
    assert beyond["items"] == []
    assert beyond["total_count"] == 33


async def test_get_history_with_filters(api: Any) -> None:
    params = {"task_name": "score_message_task", "status": "failed"}
    body = (await api.get(f"{API}/history", params=params)).json()
    assert body["total_count"] == 10
    assert all(i["task_name"] == "score_message_task" for i in body["items"])
    assert all(i["status"] == "failed" for i in body["items"])
    assert all(i["has_traceback"] for i in body["items"])
    assert "error_traceback" not in body["items"][0]
    running = (await api.get(f"{API}/history", params={"status": "running"})).json()
    assert [i["task_name"] for i in running["items"]] == ["send_email"]


async def test_history_date_range(api: Any) -> None:
    params = {
        "start_date": (NOW - timedelta(minutes=31)).isoformat(),
        "end_date": (NOW - timedelta(minutes=5)).replace(tzinfo=None).isoformat(),  # naive: UTC
    }
    body = (await api.get(f"{API}/history", params=params)).json()
    # score rows at minutes 6, 11, 16, 21, 26, 31 (31 is just inside the start)
    assert body["total_count"] == 6
    assert len(body["items"]) == 6
    assert all(params["start_date"] <= i["created_at"] for i in body["items"])


async def test_cursor_walks_the_same_rows_as_pages(api: Any) -> None:
    pages: list[int] = []
    for page in (1, 2, 3, 4):
        body = (await api.get(f"{API}/history", params={"page": page, "page_size": 10})).json()
        pages.extend(i["id"] for i in body["items"])
    walked: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"page_size": 10}
        if cursor:
            params["cursor"] = cursor
        body = (await api.get(f"{API}/history", params=params)).json()
        walked.extend(i["id"] for i in body["items"])
        assert body["total_count"] == 33
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert body["page"] is None or body["page"] == 1
    assert walked == pages


async def test_detail_with_traceback_and_by_task_id(api: Any) -> None:
    failed = (await api.get(f"{API}/history", params={"status": "failed", "page_size": 1})).json()
    row = failed["items"][0]
    response = await api.get(f"{API}/history/{row['id']}")
    assert response.status_code == 200
    detail = TaskExecutionLogDetail.model_validate(response.json())
    assert detail.error_traceback is not None
    assert detail.error_traceback.startswith("Traceback")
    attempts = await api.get(f"{API}/history/task/{row['task_id']}")
    assert attempts.status_code == 200
    body = TaskAttemptsResponse.model_validate(attempts.json())
    assert [a.id for a in body.attempts] == [row["id"]]


async def test_task_names(api: Any) -> None:
    response = await api.get(f"{API}/tasks")
    assert response.status_code == 200
    assert TaskNamesResponse.model_validate(response.json()).task_names == [
        "old_task",
        "score_message_task",
        "send_email",
    ]


@pytest.mark.parametrize(
    "path",
    [
        f"{API}/history?start_date=invalid",
        f"{API}/history?end_date=2026-01-01&start_date=2026-02-01",
        f"{API}/history?status=unknown",
        f"{API}/history?page=0",
        f"{API}/history?page_size=0",
        f"{API}/history?page_size=10000",
        f"{API}/history?page=abc",
        f"{API}/history?nope=1",
        f"{API}/history?task_name={'x' * 300}",
        f"{API}/metrics?time_window=0",
        f"{API}/metrics?time_window=100000",
        f"{API}/metrics?time_window=1.5",
        f"{API}/tasks?x=1",
        f"{API}/history/abc",
        f"{API}/history/0",
        f"{API}/history/99999999999999999999999",
    ],
)
async def test_get_history_invalid_parameters_return_400(api: Any, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 400
    ErrorResponse.model_validate(response.json())


async def test_not_found_shapes(api: Any) -> None:
    for path in (f"{API}/history/123456789", f"{API}/history/task/nope", "/nowhere"):
        response = await api.get(path)
        assert response.status_code == 404, path
        assert set(response.json()) == {"error"}
    response = await api.post(f"{API}/history")
    assert response.status_code == 405
    assert set(response.json()) == {"error"}


async def test_health_ready_openapi(api: Any) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok", "version": __version__}
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["migrations"] == "at head"
    spec = (await api.get("/openapi.json")).json()
    assert f"{API}/history" in spec["paths"]
    assert "TaskHistoryResponse" in spec["components"]["schemas"]


async def test_metrics_scrape_has_store_gauges(api: Any) -> None:
    response = await api.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert 'taskiq_tasks_by_status{status="pending"} 1.0' in text
    assert 'taskiq_tasks_by_status{status="running"} 1.0' in text
    age = next(line for line in text.splitlines() if line.startswith("taskiq_oldest_pending"))
    assert 50 < float(age.split()[-1]) < 600
    om = await api.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert om.text.rstrip().endswith("# EOF")


async def test_api_token_required_when_set(store_url: str) -> None:
    async with running_service(store_url, api_token="s3cret") as (_app, client):
        assert (await client.get(f"{API}/history")).status_code == 401
        wrong = await client.get(f"{API}/history", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert set(wrong.json()) == {"error"}
        ok = await client.get(f"{API}/history", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert (await client.get("/healthz")).status_code == 200
