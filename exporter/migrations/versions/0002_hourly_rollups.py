"""Hourly rollups kept by triggers from the minute rollups.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)

# The trigger DDL at this revision (the migrations are its only source).
PG_FUNCTION = """
CREATE OR REPLACE FUNCTION task_execution_rollups_to_hourly() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE task_execution_rollups_hourly AS h
        SET count = h.count - OLD.count, duration_ms_sum = h.duration_ms_sum - OLD.duration_ms_sum
        WHERE h.bucket_start =
                date_trunc('hour', OLD.bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
          AND h.task_name = OLD.task_name AND h.status = OLD.status;
        IF TG_OP = 'DELETE' THEN
            DELETE FROM task_execution_rollups_hourly AS h
            WHERE h.bucket_start =
                date_trunc('hour', OLD.bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
              AND h.task_name = OLD.task_name AND h.status = OLD.status AND h.count <= 0;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO task_execution_rollups_hourly AS h
            (bucket_start, task_name, status, count, duration_ms_sum)
        VALUES (date_trunc('hour', NEW.bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                NEW.task_name, NEW.status, NEW.count, NEW.duration_ms_sum)
        ON CONFLICT (bucket_start, task_name, status) DO UPDATE
        SET count = h.count + excluded.count,
            duration_ms_sum = h.duration_ms_sum + excluded.duration_ms_sum;
    END IF;
    RETURN NULL;
END
$$
"""
PG_TRIGGER = """
CREATE TRIGGER task_execution_rollups_hourly_sync
AFTER INSERT OR UPDATE OR DELETE ON task_execution_rollups
FOR EACH ROW EXECUTE FUNCTION task_execution_rollups_to_hourly()
"""
PG_BACKFILL = """
INSERT INTO task_execution_rollups_hourly (bucket_start, task_name, status, count, duration_ms_sum)
SELECT date_trunc('hour', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', task_name, status,
       sum(count), sum(duration_ms_sum)
FROM task_execution_rollups GROUP BY 1, 2, 3
"""
_HOUR = "substr({row}.bucket_start, 1, 13) || ':00:00.000000'"
_ADD = f"""
    INSERT INTO task_execution_rollups_hourly
        (bucket_start, task_name, status, count, duration_ms_sum)
    VALUES ({_HOUR.format(row="NEW")}, NEW.task_name, NEW.status, NEW.count,
            NEW.duration_ms_sum)
    ON CONFLICT (bucket_start, task_name, status) DO UPDATE
    SET count = count + excluded.count,
        duration_ms_sum = duration_ms_sum + excluded.duration_ms_sum;
"""  # noqa: S608 - built from constants, no input
_SUB = f"""
    UPDATE task_execution_rollups_hourly
    SET count = count - OLD.count, duration_ms_sum = duration_ms_sum - OLD.duration_ms_sum
    WHERE bucket_start = {_HOUR.format(row="OLD")}
      AND task_name = OLD.task_name AND status = OLD.status;
"""  # noqa: S608 - built from constants, no input
_PRUNE = f"""
    DELETE FROM task_execution_rollups_hourly
    WHERE bucket_start = {_HOUR.format(row="OLD")}
      AND task_name = OLD.task_name AND status = OLD.status AND count <= 0;
"""  # noqa: S608 - built from constants, no input
SQLITE_TRIGGERS = (
    "CREATE TRIGGER task_execution_rollups_hourly_ins AFTER INSERT ON task_execution_rollups "
    f"BEGIN {_ADD} END",
    "CREATE TRIGGER task_execution_rollups_hourly_upd AFTER UPDATE ON task_execution_rollups "
    f"BEGIN {_SUB} {_ADD} END",
    "CREATE TRIGGER task_execution_rollups_hourly_del AFTER DELETE ON task_execution_rollups "
    f"BEGIN {_SUB} {_PRUNE} END",
)
SQLITE_BACKFILL = f"""
INSERT INTO task_execution_rollups_hourly (bucket_start, task_name, status, count, duration_ms_sum)
SELECT {_HOUR.format(row="task_execution_rollups")}, task_name, status,
       sum(count), sum(duration_ms_sum)
FROM task_execution_rollups GROUP BY 1, 2, 3
"""  # noqa: S608 - built from constants, no input


def upgrade() -> None:
    op.create_table(
        "task_execution_rollups_hourly",
        sa.Column("bucket_start", TIMESTAMP, nullable=False),
        sa.Column("task_name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("duration_ms_sum", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("bucket_start", "task_name", "status"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_BACKFILL)
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        op.execute(SQLITE_BACKFILL)
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP TRIGGER IF EXISTS task_execution_rollups_hourly_sync ON task_execution_rollups"
        )
        op.execute("DROP FUNCTION IF EXISTS task_execution_rollups_to_hourly()")
    else:
        for op_name in ("ins", "upd", "del"):
            op.execute(f"DROP TRIGGER IF EXISTS task_execution_rollups_hourly_{op_name}")
    op.drop_table("task_execution_rollups_hourly")
