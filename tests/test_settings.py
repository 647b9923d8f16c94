"""ExporterSettings: the read replica's URL (TASKIQ_EXPORTER_READ_DATABASE_URL)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from exporter.cli.options import settings_message
from exporter.settings import ExporterSettings

PRIMARY = "postgresql+asyncpg://exporter@db-primary/exporter"


def test_no_replica_by_default_and_an_empty_variable_is_none() -> None:
    assert ExporterSettings(database_url=PRIMARY).read_database_url is None
    assert ExporterSettings(database_url=PRIMARY, read_database_url=" ").read_database_url is None


def test_a_bare_postgres_scheme_means_asyncpg() -> None:
    settings = ExporterSettings(
        database_url=PRIMARY, read_database_url="postgres://exporter@db-replica/exporter"
    )
    assert settings.read_database_url == "postgresql+asyncpg://exporter@db-replica/exporter"


@pytest.mark.parametrize(
    ("primary", "replica", "message"),
    [
        (PRIMARY, "sqlite:///copy.sqlite3", "must be a PostgreSQL streaming replica"),
        (PRIMARY, "mysql://u@h/db", "unsupported driver 'mysql'"),
        (PRIMARY, "not a url", "not a database URL"),
        ("sqlite:///x.sqlite3", "postgresql://u@h/db", "needs TASKIQ_EXPORTER_DATABASE_URL on"),
    ],
)
def test_a_replica_must_be_postgresql_like_its_primary(
    primary: str, replica: str, message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        ExporterSettings(database_url=primary, read_database_url=replica)
    said = settings_message(refused.value)
    assert said.startswith("invalid TASKIQ_EXPORTER_READ_DATABASE_URL: ")
    assert message in said


def test_the_replicas_password_is_never_shown() -> None:
    url = "postgresql://reader:hunter2-secret@db-replica/exporter"
    settings = ExporterSettings(database_url=PRIMARY, read_database_url=url)
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings)
    with pytest.raises(ValidationError) as refused:
        ExporterSettings(database_url="sqlite:///x.sqlite3", read_database_url=url)
    assert "hunter2-secret" not in str(refused.value)
    assert "hunter2-secret" not in settings_message(refused.value)
