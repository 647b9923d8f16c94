"""PostgreSQL: the hourly rollups kept by statement-level triggers.

0002's row-level trigger made one plpgsql call per minute rollup row a writer's
statement touched; these make one per statement. SQLite is unchanged (it has
row-level triggers only).

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The trigger DDL at this revision (the migrations are its only source).
_HOUR = "date_trunc('hour', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
_NEW = "SELECT bucket_start, task_name, status, count, duration_ms_sum FROM new_rows"
_OLD = (
    "SELECT bucket_start, task_name, status, -count AS count, "
    "-duration_ms_sum AS duration_ms_sum FROM old_rows"
)
_UPSERT = f"""
        INSERT INTO task_execution_rollups_hourly AS h
            (bucket_start, task_name, status, count, duration_ms_sum)
        SELECT {_HOUR}, task_name, status, sum(count), sum(duration_ms_sum)
        FROM ({{changes}}) AS changes
        GROUP BY 1, 2, 3
        ORDER BY 2, 3, 1
        ON CONFLICT (bucket_start, task_name, status) DO UPDATE
        SET count = h.count + excluded.count,
            duration_ms_sum = h.duration_ms_sum + excluded.duration_ms_sum;"""  # noqa: S608 - built from constants, no input
PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION task_execution_rollups_to_hourly() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN{_UPSERT.format(changes=_NEW)}
    ELSIF TG_OP = 'UPDATE' THEN{_UPSERT.format(changes=f"{_NEW} UNION ALL {_OLD}")}
    ELSE
        UPDATE task_execution_rollups_hourly AS h
        SET count = h.count + d.count, duration_ms_sum = h.duration_ms_sum + d.duration_ms_sum
        FROM (SELECT {_HOUR} AS hour, task_name, status,
                     sum(count) AS count, sum(duration_ms_sum) AS duration_ms_sum
              FROM ({_OLD}) AS changes GROUP BY 1, 2, 3) AS d
        WHERE h.bucket_start = d.hour AND h.task_name = d.task_name AND h.status = d.status;
        DELETE FROM task_execution_rollups_hourly AS h
        USING (SELECT DISTINCT {_HOUR} AS hour, task_name, status FROM old_rows) AS d
        WHERE h.bucket_start = d.hour AND h.task_name = d.task_name AND h.status = d.status
          AND h.count <= 0;
    END IF;
    RETURN NULL;
END
$$
"""  # noqa: S608 - built from constants, no input
_TRIGGER = (
    "CREATE TRIGGER task_execution_rollups_hourly_{op} AFTER {event} ON task_execution_rollups "
    "REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION task_execution_rollups_to_hourly()"
)
PG_TRIGGERS = (
    _TRIGGER.format(op="ins", event="INSERT", tables="NEW TABLE AS new_rows"),
    _TRIGGER.format(op="upd", event="UPDATE", tables="OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    _TRIGGER.format(op="del", event="DELETE", tables="OLD TABLE AS old_rows"),
)

# 0002's row-level function and trigger, restored by the downgrade.
ROW_FUNCTION = """
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
ROW_TRIGGER = """
CREATE TRIGGER task_execution_rollups_hourly_sync
AFTER INSERT OR UPDATE OR DELETE ON task_execution_rollups
FOR EACH ROW EXECUTE FUNCTION task_execution_rollups_to_hourly()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # One transaction: no writer's statement sees the table with no trigger.
    op.execute(
        "DROP TRIGGER IF EXISTS task_execution_rollups_hourly_sync ON task_execution_rollups"
    )
    op.execute(PG_FUNCTION)
    for statement in PG_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in ("ins", "upd", "del"):
        op.execute(
            f"DROP TRIGGER IF EXISTS task_execution_rollups_hourly_{name} ON task_execution_rollups"
        )
    op.execute(ROW_FUNCTION)
    op.execute(ROW_TRIGGER)
