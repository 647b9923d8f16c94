"""Settings: one pydantic-settings class, read only by entry points."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///taskiq_exporter.sqlite3"
# The drivers the store is written for, and the bare schemes that mean them.
DRIVERS = ("postgresql+asyncpg", "sqlite+aiosqlite")
_SCHEMES = {"postgresql": DRIVERS[0], "postgres": DRIVERS[0], "sqlite": DRIVERS[1]}
# Where `taskiq-exporter worker` has its processes write their metrics and where
# `taskiq-exporter serve` sums them, unless a flag or PROMETHEUS_MULTIPROC_DIR says
# otherwise: one default, so that the two agree out of the box.
DEFAULT_MULTIPROC_DIR = "/tmp/taskiq-exporter-metrics"  # noqa: S108 - a per-host scratch directory

DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "private_key",
)

# 5 ms to 10 min, roughly x2.5 per step: enough resolution for p50/p95/p99.
DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
DEFAULT_QUEUE_WAIT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)


class ExporterSettings(BaseSettings):
    """Every knob of the exporter; each is also a ``TASKIQ_EXPORTER_*`` variable."""

    # hide_input_in_errors: a rejected URL or token must not reach a log or a terminal.
    model_config = SettingsConfigDict(
        env_prefix="TASKIQ_EXPORTER_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL (postgresql+asyncpg://... or sqlite+aiosqlite:///...; "
        "postgresql://, postgres:// and sqlite:/// mean the same)",
    )
    # What is written
    secret_keys: tuple[str, ...] = DEFAULT_SECRET_KEYS
    max_params_bytes: int = Field(16_384, ge=64)
    max_error_message_bytes: int = Field(2_048, ge=64)
    max_traceback_bytes: int = Field(32_768, ge=256)
    # The background writer
    flush_interval_seconds: float = Field(0.05, gt=0, le=3600)
    batch_size: int = Field(5_000, ge=1, le=100_000)
    max_buffer_rows: int = Field(100_000, ge=1)
    retry_backoff_initial_seconds: float = Field(0.2, gt=0)
    retry_backoff_max_seconds: float = Field(10.0, gt=0)
    # Below taskiq worker's default --shutdown-timeout (5 s), so that what cannot be
    # written in time is still counted before taskiq cancels the shutdown.
    shutdown_flush_timeout_seconds: float = Field(4.0, gt=0)
    record_pending: bool = Field(True, description="write a PENDING row when a task is sent")
    # Metrics
    metrics_flush_interval_seconds: float = Field(1.0, gt=0, le=60)
    duration_buckets: tuple[float, ...] = DEFAULT_DURATION_BUCKETS
    queue_wait_buckets: tuple[float, ...] = DEFAULT_QUEUE_WAIT_BUCKETS
    multiproc_dir: str | None = Field(
        None,
        description="prometheus_client multiprocess directory (else PROMETHEUS_MULTIPROC_DIR; "
        f"`taskiq-exporter worker` and `serve` fall back to {DEFAULT_MULTIPROC_DIR})",
    )
    # Maintenance (run by the service; one replica at a time on PostgreSQL)
    maintenance: bool = Field(True, description="run the orphan reaper and retention job")
    orphan_timeout_seconds: float = Field(3_600.0, gt=0)
    reaper_interval_seconds: float = Field(60.0, gt=0)
    retention_days: float = Field(30.0, gt=0)
    retention_batch_rows: int = Field(10_000, ge=1)
    retention_interval_seconds: float = Field(3_600.0, gt=0)
    # Service
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_token: SecretStr | None = None
    metrics_token: SecretStr | None = None

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        value = _SCHEMES.get(scheme, scheme) + sep + rest
        try:
            driver = make_url(value).drivername
        except ArgumentError:
            raise ValueError("not a database URL") from None
        if driver not in DRIVERS:
            raise ValueError(
                f"unsupported driver {driver!r}: use postgresql+asyncpg://user@host/db "
                "or sqlite+aiosqlite:///file.sqlite3"
            )
        return value

    @field_validator("duration_buckets", "queue_wait_buckets")
    @classmethod
    def _sorted_buckets(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or list(value) != sorted(set(value)) or value[0] <= 0:
            raise ValueError("buckets must be positive, strictly increasing and not empty")
        return value

    @field_validator("secret_keys")
    @classmethod
    def _lower_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(k.lower() for k in value)

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")
