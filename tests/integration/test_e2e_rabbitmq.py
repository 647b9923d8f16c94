"""End to end on RabbitMQ (taskiq-aio-pika): a smoke run of the Redis test's checks."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import e2e_scenario

TASKS = 400
AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672


def require_rabbitmq() -> None:
    pytest.importorskip("taskiq_aio_pika")
    try:
        socket.create_connection((AMQP_HOST, AMQP_PORT), timeout=2).close()
    except OSError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ is required when CI is set: {exc!r}")
        pytest.skip(f"RabbitMQ not available: {exc!r}")


def test_a_smoke_run_on_rabbitmq_loses_nothing(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    require_rabbitmq()
    e2e_scenario.run(
        database_url=pg_store,
        metrics_dir=tmp_path / "metrics",
        port=unused_port(),
        tasks=TASKS,
        broker="rabbitmq",
    )
