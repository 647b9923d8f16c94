"""Settings: one pydantic-settings class, read only by entry points."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from exporter.text import key_words

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///taskiq_exporter.sqlite3"
# The drivers the store is written for, and the bare schemes that mean them.
DRIVERS = ("postgresql+asyncpg", "sqlite+aiosqlite")
_SCHEMES = {"postgresql": DRIVERS[0], "postgres": DRIVERS[0], "sqlite": DRIVERS[1]}
# Where `taskiq-exporter worker` has its processes write their metrics and where
# `taskiq-exporter serve` sums them, unless a flag or PROMETHEUS_MULTIPROC_DIR says
# otherwise: one default, so that the two agree out of the box.
DEFAULT_MULTIPROC_DIR = "/tmp/taskiq-exporter-metrics"  # noqa: S108 - a per-host scratch directory

# Argument names and keys whose values are never stored. An entry matches a key
# by words, not by substring (`pass` matches `db_pass`, not `passenger`); the rule,
# its allow-list and the value patterns are in exporter/middleware/redaction.py,
# what it cannot find in docs/security.md.
DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "secret",
    "client_secret",
    "token",
    "jwt",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "cookie",
    "session",
    "signature",
    "dsn",
    "connection_string",
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


# `serve` refuses a shorter bearer token; an embedding app logs a warning.
MIN_TOKEN_LENGTH = 16
GENERATE_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' prints one"
TOKEN_FIELDS = ("api_token", "metrics_token")


def check_token(token: str) -> str:
    """``token`` without surrounding whitespace (a bearer header is read the same
    way); an empty one would turn authentication off, so it is an error."""
    token = token.strip()
    if not token:
        raise ValueError(
            f"empty or blank: set a token of at least {MIN_TOKEN_LENGTH} characters "
            f"({GENERATE_HINT}), or unset the variable to serve without one"
        )
    if not (token.isascii() and token.isprintable()):
        raise ValueError("must be printable ASCII (it travels in an HTTP header)")
    return token


def read_token(path: Path) -> str:
    """The token a file holds (a trailing newline is not part of it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    try:
        return check_token(text)
    except ValueError as exc:
        raise ValueError(f"the token in {path} is {exc}") from None


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def host_pattern(value: str) -> str:
    """A name the Host header may give: lower case, an IPv6 address without brackets."""
    name = value.strip().lower().removeprefix("[").removesuffix("]")
    bare = name.removeprefix("*.")
    try:
        ipaddress.ip_address(bare)
        ok = name == bare
    except ValueError:
        ok = name == "*" or (bool(bare) and all(c.isalnum() or c in "-." for c in bare))
    if not ok or not name.isascii():
        raise ValueError(
            f"{value[:80]!r} is not a host name: give names such as exporter.example.com, "
            "10.0.0.5 or *.example.com, without a scheme or a port"
        )
    return name


def origin_pattern(value: str) -> str:
    """An origin as browsers send it: ``scheme://host[:port]``, lower case."""
    origin = value.strip().lower().rstrip("/")
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
        raise ValueError(
            f"{value[:80]!r} is not an origin: give it as https://grafana.example.com "
            "or http://10.0.0.5:3000"
        )
    return origin


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
    read_database_url: str | None = Field(
        None,
        description="a streaming replica of database_url (PostgreSQL) for the service's reads: "
        "history, detail, summary, task names and event replay; the writers, live events, "
        "the reaper and retention stay on database_url",
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
    # Rows of failures carry tracebacks: 100,000 of them would be gigabytes.
    max_buffer_bytes: int = Field(
        256 * 2**20, ge=2**20, description="estimated bytes of log rows a process buffers"
    )
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
    # Longer than any queue backlog should last: a PENDING row this old was lost.
    pending_timeout_seconds: float = Field(
        86_400.0, gt=0, description="fail PENDING attempts no worker started within this"
    )
    reaper_interval_seconds: float = Field(60.0, gt=0)
    retention_days: float = Field(30.0, gt=0)
    retention_batch_rows: int = Field(10_000, ge=1)
    retention_interval_seconds: float = Field(3_600.0, gt=0)
    # PostgreSQL keeps the log in time partitions (see docs/scaling.md).
    partition_interval_hours: int = Field(
        24,
        description="hours of history per partition of the log on PostgreSQL: a divisor "
        "of 24 or a whole number of days (24, 48, ... 744)",
    )
    partition_ahead_hours: float = Field(
        72.0, gt=0, le=24 * 366, description="how far ahead partitions are created"
    )
    # Live events (WS /api/v1/monitoring/events)
    events_max_connections: int = Field(200, ge=1, description="open event streams in all")
    events_max_connections_per_client: int = Field(
        20, ge=1, description="open event streams per remote address"
    )
    events_max_replay_age_seconds: float = Field(
        3_600.0, gt=0, description="how far back since= replays (never before retention_days)"
    )
    events_max_replay_rows: int = Field(
        5_000, ge=1, le=100_000, description="rows one since= replay sends before it stops"
    )
    events_queue_size: int = Field(
        10_000, ge=1, le=1_000_000, description="events queued per stream for a slow client"
    )
    # The broker's backlog, read by the service (exporter.brokers)
    broker: str | None = Field(
        None,
        description="module:variable of the taskiq broker whose queues the service reads "
        "(as `taskiq worker` takes it); none: no queue backlog is exported",
    )
    broker_inspect_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="an inspection of the broker's queues is cancelled after"
    )
    broker_inspect_budget_seconds: float = Field(
        0.5, gt=0, le=10, description="how long /metrics waits for an inspection in progress"
    )
    broker_inspect_cache_seconds: float = Field(
        5.0, ge=0, le=300, description="how long an inspection's answer is reused"
    )
    # Service
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_token: SecretStr | None = Field(
        None, description="bearer token for /api and the WebSocket (none: the API is open)"
    )
    api_token_file: Path | None = Field(
        None, description="a file holding the API token (instead of TASKIQ_EXPORTER_API_TOKEN)"
    )
    metrics_token: SecretStr | None = Field(None, description="bearer token for /metrics")
    metrics_token_file: Path | None = Field(
        None,
        description="a file holding the metrics token (instead of TASKIQ_EXPORTER_METRICS_TOKEN)",
    )
    # None: an embedding app leaves the Host header to its host application; the
    # commands (`serve`, `demo`) always check it (exporter.cli.options.settings_from).
    allowed_hosts: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None,
        description="comma-separated names a request's Host header may give, besides "
        "localhost, 127.0.0.1, ::1 and the address bound; *.example.com for a domain's "
        "subdomains, * for any",
    )
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated origins (https://grafana.example.com) whose pages may "
        "open the WebSocket, besides those on an allowed host; * for any",
    )

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return _database_url(value)

    @field_validator("read_database_url")
    @classmethod
    def _postgres_replica(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():  # an empty variable: no replica
            return None
        value = _database_url(value)
        if not value.startswith(DRIVERS[0]):
            raise ValueError(
                "must be a PostgreSQL streaming replica (postgresql://user@host/db): "
                "SQLite has no replicas"
            )
        primary = info.data.get("database_url")  # absent when it was invalid itself
        if primary is not None and not primary.startswith(DRIVERS[0]):
            raise ValueError(
                "a read replica needs TASKIQ_EXPORTER_DATABASE_URL on PostgreSQL too "
                "(it is SQLite): unset TASKIQ_EXPORTER_READ_DATABASE_URL"
            )
        return value

    @field_validator("duration_buckets", "queue_wait_buckets")
    @classmethod
    def _sorted_buckets(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or list(value) != sorted(set(value)) or value[0] <= 0:
            raise ValueError("buckets must be positive, strictly increasing and not empty")
        return value

    @field_validator("partition_interval_hours")
    @classmethod
    def _whole_partitions(cls, value: int) -> int:
        # Partitions start on multiples of the interval since the epoch: a day is
        # cut into equal parts, or whole days follow each other.
        if value <= 0 or (value < 24 and 24 % value) or (value >= 24 and value % 24):
            raise ValueError(
                f"{value} hours: use a divisor of 24 (1, 2, 3, 4, 6, 8, 12) "
                "or a whole number of days in hours (24, 48, ... 744)"
            )
        if value > 744:
            raise ValueError(f"{value} hours: at most 744 (31 days) per partition")
        return value

    @field_validator("secret_keys")
    @classmethod
    def _lower_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Words joined by "_", lower case: "sessionToken" and "Session-Token" are
        # "session_token" (the rule compares words: exporter/middleware/redaction.py).
        words = ("_".join(key_words(k)) for k in value)
        return tuple(dict.fromkeys(w for w in words if w))

    @field_validator(*TOKEN_FIELDS)
    @classmethod
    def _usable_token(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else SecretStr(check_token(value.get_secret_value()))

    @field_validator("api_token_file", "metrics_token_file")
    @classmethod
    def _readable_token_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_token(value)
        return value

    @model_validator(mode="after")
    def _tokens_from_files(self) -> ExporterSettings:
        for name in TOKEN_FIELDS:
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                var = f"TASKIQ_EXPORTER_{name.upper()}"
                raise ValueError(
                    f"both {var} and a token file ({var}_FILE or --{name.replace('_', '-')}"
                    "-file) are set: keep one"
                )
            setattr(self, name, SecretStr(read_token(path)))
        return self

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _comma_separated(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else tuple(host_pattern(v) for v in value)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(origin_pattern(v) for v in value)

    def short_tokens(self) -> list[str]:
        """The token settings that are set but shorter than MIN_TOKEN_LENGTH."""
        short = []
        for name in TOKEN_FIELDS:
            token = getattr(self, name)
            if isinstance(token, SecretStr):  # else a str set through model_copy
                token = token.get_secret_value()
            if token is not None and len(token) < MIN_TOKEN_LENGTH:
                short.append(name)
        return short

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr() and str() of the settings end up in logs and tracebacks: no password.
        for name, value in super().__repr_args__():
            if name in ("database_url", "read_database_url") and isinstance(value, str):
                value = _hide_password(value)
            yield name, value

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")


def _database_url(value: str) -> str:
    """``value`` with the bare scheme spelled as its async driver; a clear error for
    anything but the drivers the store is written for."""
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


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "***"
