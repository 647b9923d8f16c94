"""The middleware under test on an in-place broker, and reading its own registry."""

from __future__ import annotations

from typing import Any

from taskiq import InMemoryBroker
from taskiq.middlewares import SimpleRetryMiddleware

from exporter import MonitoringMiddleware

# Rows and metrics flushed within tens of milliseconds (the defaults are ~1 s).
FAST: dict[str, float] = {"flush_interval_seconds": 0.02, "metrics_flush_interval_seconds": 0.05}


def monitored_broker(
    database_url: str, *, retries: int = 0, **options: Any
) -> tuple[InMemoryBroker, MonitoringMiddleware]:
    """An ``InMemoryBroker(await_inplace=True)`` with a :class:`MonitoringMiddleware`
    on ``database_url`` (``options`` are its settings, :data:`FAST` unless given);
    with ``retries``, a ``SimpleRetryMiddleware(default_retry_count=retries)`` before
    it. The caller registers its tasks on the broker."""
    mw = MonitoringMiddleware(database_url=database_url, **{**FAST, **options})
    middlewares = (SimpleRetryMiddleware(default_retry_count=retries), mw) if retries else (mw,)
    return InMemoryBroker(await_inplace=True).with_middlewares(*middlewares), mw


def sample(mw: MonitoringMiddleware, name: str, **labels: str) -> float:
    """The value of one sample of the middleware's registry. A sample the registry
    does not have fails the test: a misspelt name or label must not read as 0."""
    value = mw.registry.get_sample_value(name, labels)
    assert value is not None, f"no sample {name}{labels or ''} in the middleware's registry"
    return value
