"""Hourly rollups, kept equal to the sum of the per-minute rollups by triggers.

Summing 30 days of minute rollups (~700k rows at 10M log rows) takes 30-110 ms;
the hourly level (~12k rows) takes about one. Triggers rather than writer code:
every writer, the retention job and any hand-made fix keep the invariant
``hourly = sum(minutes of that hour)`` in the same transaction, on both databases.

On PostgreSQL the AFTER ROW triggers run at the end of the writer's statement, so
the hourly rows are locked after all of the statement's minute rows: writers that
insert their minute rollups in (task_name, status, bucket_start) order cannot
deadlock on them.
"""

from __future__ import annotations

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
PG_DROP = (
    "DROP TRIGGER IF EXISTS task_execution_rollups_hourly_sync ON task_execution_rollups",
    "DROP FUNCTION IF EXISTS task_execution_rollups_to_hourly()",
)

# SQLite stores UTCDateTime as 'YYYY-MM-DD HH:MM:SS.ffffff' text.
_SQLITE_HOUR = "substr({row}.bucket_start, 1, 13) || ':00:00.000000'"
_SQLITE_ADD = f"""
    INSERT INTO task_execution_rollups_hourly
        (bucket_start, task_name, status, count, duration_ms_sum)
    VALUES ({_SQLITE_HOUR.format(row="NEW")}, NEW.task_name, NEW.status, NEW.count,
            NEW.duration_ms_sum)
    ON CONFLICT (bucket_start, task_name, status) DO UPDATE
    SET count = count + excluded.count,
        duration_ms_sum = duration_ms_sum + excluded.duration_ms_sum;
"""
_SQLITE_SUB = f"""
    UPDATE task_execution_rollups_hourly
    SET count = count - OLD.count, duration_ms_sum = duration_ms_sum - OLD.duration_ms_sum
    WHERE bucket_start = {_SQLITE_HOUR.format(row="OLD")}
      AND task_name = OLD.task_name AND status = OLD.status;
"""
_SQLITE_PRUNE = f"""
    DELETE FROM task_execution_rollups_hourly
    WHERE bucket_start = {_SQLITE_HOUR.format(row="OLD")}
      AND task_name = OLD.task_name AND status = OLD.status AND count <= 0;
"""
SQLITE_TRIGGERS = (
    "CREATE TRIGGER task_execution_rollups_hourly_ins AFTER INSERT ON task_execution_rollups "
    f"BEGIN {_SQLITE_ADD} END",
    "CREATE TRIGGER task_execution_rollups_hourly_upd AFTER UPDATE ON task_execution_rollups "
    f"BEGIN {_SQLITE_SUB} {_SQLITE_ADD} END",
    "CREATE TRIGGER task_execution_rollups_hourly_del AFTER DELETE ON task_execution_rollups "
    f"BEGIN {_SQLITE_SUB} {_SQLITE_PRUNE} END",
)
SQLITE_DROP = tuple(
    f"DROP TRIGGER IF EXISTS task_execution_rollups_hourly_{op}" for op in ("ins", "upd", "del")
)

BACKFILL_PG = """
INSERT INTO task_execution_rollups_hourly (bucket_start, task_name, status, count, duration_ms_sum)
SELECT date_trunc('hour', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', task_name, status,
       sum(count), sum(duration_ms_sum)
FROM task_execution_rollups GROUP BY 1, 2, 3
"""
BACKFILL_SQLITE = f"""
INSERT INTO task_execution_rollups_hourly (bucket_start, task_name, status, count, duration_ms_sum)
SELECT {_SQLITE_HOUR.format(row="task_execution_rollups")}, task_name, status,
       sum(count), sum(duration_ms_sum)
FROM task_execution_rollups GROUP BY 1, 2, 3
"""


def create_statements(dialect: str) -> tuple[str, ...]:
    """The trigger DDL of ``dialect`` (run after both rollup tables exist)."""
    if dialect == "postgresql":
        return (PG_FUNCTION, PG_TRIGGER)
    if dialect == "sqlite":
        return SQLITE_TRIGGERS
    return ()


def backfill_statement(dialect: str) -> str:
    return BACKFILL_PG if dialect == "postgresql" else BACKFILL_SQLITE
