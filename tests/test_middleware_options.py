"""Configuring the middleware: keyword arguments and TASKIQ_EXPORTER_* variables."""

from __future__ import annotations

import pydantic
import pytest

from exporter import MonitoringMiddleware

URL = "sqlite+aiosqlite:///unused.sqlite3"


def test_database_url_alone_is_enough() -> None:
    mw = MonitoringMiddleware(database_url=URL)
    assert mw.settings.database_url == URL
    assert mw.settings.max_buffer_rows == 100_000


def test_environment_variables_configure_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKIQ_EXPORTER_DATABASE_URL", URL)
    monkeypatch.setenv("TASKIQ_EXPORTER_SECRET_KEYS", '["ssn"]')
    monkeypatch.setenv("TASKIQ_EXPORTER_FLUSH_INTERVAL_SECONDS", "0.5")
    mw = MonitoringMiddleware()
    assert mw.settings.database_url == URL
    assert mw.settings.secret_keys == ("ssn",)
    assert mw.settings.flush_interval_seconds == 0.5
    # A keyword argument wins over the environment.
    assert MonitoringMiddleware(flush_interval_seconds=2).settings.flush_interval_seconds == 2


def test_an_unknown_option_is_an_error_naming_it_and_the_allowed_ones() -> None:
    with pytest.raises(TypeError, match=r"flush_intervl.*allowed: .*flush_interval_seconds"):
        MonitoringMiddleware(database_url=URL, flush_intervl=1)


def test_a_bad_value_names_the_option() -> None:
    with pytest.raises(pydantic.ValidationError, match="flush_interval_seconds"):
        MonitoringMiddleware(database_url=URL, flush_interval_seconds=-1)
    with pytest.raises(pydantic.ValidationError, match="duration_buckets"):
        MonitoringMiddleware(database_url=URL, duration_buckets=(1.0, 0.5))
