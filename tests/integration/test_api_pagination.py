"""Deep pages and totals from the rollups agree with a plain reference, on both stores."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.helpers.rows import insert_logs, stored_row
from tests.helpers.serving import running_service

pytestmark = pytest.mark.integration
API = "/api/v1/monitoring"
NOW = datetime.now(UTC).replace(microsecond=0)
NAMES = ("alpha", "beta", "gamma")


def dataset() -> list[dict[str, Any]]:
    rng = random.Random(7)
    rows = []
    for i in range(2_400):
        # Bursty: most rows in a few hours, some spread over three days, equal stamps too.
        if i % 4 == 0:
            at = NOW - timedelta(seconds=rng.randrange(3 * 86_400))
        else:
            at = NOW - timedelta(hours=rng.choice((1, 5, 30)), seconds=rng.randrange(7_200))
        if i % 50 == 0:
            at = NOW - timedelta(hours=2)
        status = rng.choices(("success", "failed", "pending", "running"), (80, 15, 3, 2))[0]
        rows.append(stored_row(task_name=rng.choice(NAMES), status=status, created_at=at))
    return rows


def reference(rows: list[dict[str, Any]], **f: Any) -> list[tuple[datetime, str]]:
    kept = [
        r
        for r in rows
        if (f.get("task_name") in (None, r["task_name"]))
        and (f.get("status") in (None, r["status"]))
        and (f.get("start") is None or r["created_at"] >= f["start"])
        and (f.get("end") is None or r["created_at"] < f["end"])
    ]
    return [(r["created_at"], r["task_id"]) for r in kept]


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"task_name": "beta"},
        {"task_name": "alpha", "status": "failed"},
        {"status": "pending"},
        {
            "start": NOW - timedelta(hours=31, minutes=17, seconds=5),
            "end": NOW - timedelta(minutes=59, seconds=30),
        },
    ],
)
async def test_every_page_matches_the_reference(store_url: str, filters: dict[str, Any]) -> None:
    rows = dataset()
    await insert_logs(store_url, rows)
    expected = reference(rows, **filters)
    params: dict[str, Any] = {"page_size": 37}
    for key, name in (("task_name", "task_name"), ("status", "status")):
        if key in filters:
            params[name] = filters[key]
    if "start" in filters:
        params["start_date"] = filters["start"].isoformat()
        params["end_date"] = filters["end"].isoformat()
    got: list[tuple[datetime, str]] = []
    async with running_service(store_url) as (_app, client):
        page = 1
        while True:
            response = await client.get(f"{API}/history", params={**params, "page": page})
            assert response.status_code == 200
            body = response.json()
            assert body["total_count"] == len(expected)
            got.extend(
                (datetime.fromisoformat(i["created_at"]), i["task_id"]) for i in body["items"]
            )
            if not body["items"]:
                break
            page += 1
    assert sorted(got, key=lambda r: r[0], reverse=True) == got
    assert sorted(got) == sorted(expected)
    assert len(set(got)) == len(got)
