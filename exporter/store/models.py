"""SQLAlchemy 2.0 models of the execution log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from exporter.rows import TaskStatus

TERMINAL_STATUSES = (TaskStatus.SUCCESS, TaskStatus.FAILED)
TASK_NAME_MAX = 255


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that always comes back in UTC, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite stores text: keep one lexicographically sortable format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


PortableJSON = JSON().with_variant(JSONB(), "postgresql")
PortableBigInt = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class TaskExecutionLog(Base):
    """One row per attempt of a task: what ran, where, for how long and how it ended."""

    __tablename__ = "task_execution_logs"
    __table_args__ = (
        UniqueConstraint("task_id", "attempt", name="uq_task_execution_logs_task_id_attempt"),
        Index("ix_task_execution_logs_name_status_created", "task_name", "status", "created_at"),
        Index("ix_task_execution_logs_created_at", "created_at"),
        Index("ix_task_execution_logs_task_name", "task_name"),
        Index("ix_task_execution_logs_status", "status"),
        # Live events: a reconnecting client asks for what changed since its last event.
        Index("ix_task_execution_logs_updated_at", "updated_at"),
        # The reaper and the pending/running gauges only look at live rows: a partial
        # index keeps those lookups independent of the table's size.
        Index(
            "ix_task_execution_logs_active",
            "status",
            "started_at",
            postgresql_where=text("status IN ('pending', 'running')"),
            sqlite_where=text("status IN ('pending', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(PortableBigInt, primary_key=True, autoincrement=True)
    task_name: Mapped[str] = mapped_column(String(TASK_NAME_MAX), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    task_id: Mapped[str] = mapped_column(String(255), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    params: Mapped[Any | None] = mapped_column(PortableJSON, nullable=True)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    queue_wait_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    worker_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A failed attempt a retry middleware sent again; None where not known.
    retried: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class TaskExecutionRollup(Base):
    """Per-minute totals of finished attempts, kept by the writer in the same
    transaction as the rows: counts and averages over days never scan the log.

    ``bucket_start`` is the minute of the row's ``created_at``; only terminal
    statuses are rolled up (pending/running rows are few and have a partial index).
    """

    __tablename__ = "task_execution_rollups"

    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    task_name: Mapped[str] = mapped_column(String(TASK_NAME_MAX), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    duration_ms_sum: Mapped[float] = mapped_column(Float, nullable=False)
    # Of ``count``, the failed attempts that were retried.
    retried: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))


def utcnow() -> datetime:
    return datetime.now(UTC)


class TaskExecutionRollupHourly(Base):
    """The minute rollups summed per hour, kept equal to them by triggers
    (kept by triggers, see docs/design.md): windows and counts over weeks read ~700x fewer rows."""

    __tablename__ = "task_execution_rollups_hourly"

    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    task_name: Mapped[str] = mapped_column(String(TASK_NAME_MAX), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    duration_ms_sum: Mapped[float] = mapped_column(Float, nullable=False)
    # Of ``count``, the failed attempts that were retried.
    retried: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
