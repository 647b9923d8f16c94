"""Property-based run of /openapi.json through the ASGI transport: no 500 for any
generated input, every response conforms to the documented schema and status codes.

EXAMPLES per operation and mode gives about 3,000 schema-valid and 3,000
schema-violating requests (the four operations with parameters; the others have
one possible request each), in well under two minutes on two cores."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import positive_data_acceptance

from exporter.app import create_app
from exporter.settings import ExporterSettings
from exporter.store.migrate import upgrade
from tests.helpers.rows import insert_logs, stored_row

pytestmark = pytest.mark.integration
EXAMPLES = 750
# Requests actually sent, per test: hypothesis stops early when a space is exhausted.
MIN_REQUESTS = 2_500


@pytest.fixture
def api_schema(pg_url: str) -> Iterator[Any]:
    now = datetime.now(UTC)
    rows = [
        stored_row(
            task_name=f"app:t{i % 3}",
            status=("success", "failed", "running")[i % 3],
            created_at=now - timedelta(minutes=7 * i),
            error_traceback="Traceback ...",
        )
        for i in range(60)
    ]

    async def prepare() -> None:
        await upgrade(pg_url)
        await insert_logs(pg_url, rows)

    asyncio.run(prepare())
    app = create_app(ExporterSettings(database_url=pg_url, maintenance=False))
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        shutdown_lifespans()


def test_api_conforms_to_openapi(api_schema: Any) -> None:
    # schemathesis' own pytest plugin does not run under pytest 9 yet: drive the
    # operations' hypothesis strategies directly.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    sent = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            nonlocal sent
            sent += 1
            # Dates before 1970, end_date <= start_date, page with cursor and made-up
            # cursors are schema-valid but refused with a 400 by design.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
    assert sent >= MIN_REQUESTS


def test_invalid_input_never_gives_a_server_error(api_schema: Any) -> None:
    """Schema-violating queries and paths: a 4xx with the error shape, never a 500."""
    sent = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            nonlocal sent
            sent += 1
            response = case.call()
            assert response.status_code < 500, (case.as_curl_command(), response.text)
            if response.status_code >= 400 and case.operation.path != "/metrics":
                assert set(response.json()) == {"error"}

        with contextlib.suppress(Unsatisfiable):  # nothing to break without parameters
            check()
    assert sent >= MIN_REQUESTS
