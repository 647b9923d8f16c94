"""Create the execution log and its per-minute rollups.

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types at this revision: a migration must not change when
# the models do.
TIMESTAMP = sa.DateTime(timezone=True)
ACTIVE = sa.text("status IN ('pending', 'running')")


def upgrade() -> None:
    op.create_table(
        "task_execution_logs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("task_id", sa.String(length=255), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "params",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("queued_at", TIMESTAMP, nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("completed_at", TIMESTAMP, nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("queue_wait_ms", sa.Float(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_traceback", sa.Text(), nullable=True),
        sa.Column("worker_host", sa.String(length=255), nullable=True),
        sa.Column("worker_pid", sa.Integer(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id", "attempt", name="uq_task_execution_logs_task_id_attempt"),
    )
    with op.batch_alter_table("task_execution_logs") as batch:
        batch.create_index(
            "ix_task_execution_logs_name_status_created", ["task_name", "status", "created_at"]
        )
        batch.create_index("ix_task_execution_logs_created_at", ["created_at"])
        batch.create_index("ix_task_execution_logs_task_name", ["task_name"])
        batch.create_index("ix_task_execution_logs_status", ["status"])
        batch.create_index("ix_task_execution_logs_updated_at", ["updated_at"])
        batch.create_index(
            "ix_task_execution_logs_active",
            ["status", "started_at"],
            postgresql_where=ACTIVE,
            sqlite_where=ACTIVE,
        )

    op.create_table(
        "task_execution_rollups",
        sa.Column("bucket_start", TIMESTAMP, nullable=False),
        sa.Column("task_name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("duration_ms_sum", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("bucket_start", "task_name", "status"),
    )


def downgrade() -> None:
    op.drop_table("task_execution_rollups")
    with op.batch_alter_table("task_execution_logs") as batch:
        for name in (
            "ix_task_execution_logs_active",
            "ix_task_execution_logs_updated_at",
            "ix_task_execution_logs_status",
            "ix_task_execution_logs_task_name",
            "ix_task_execution_logs_created_at",
            "ix_task_execution_logs_name_status_created",
        ):
            batch.drop_index(name)
    op.drop_table("task_execution_logs")
