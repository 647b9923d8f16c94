"""Hourly rollups, kept equal to the sum of the per-minute rollups by triggers.

Summing 30 days of minute rollups (~700k rows at 10M log rows) takes 30-110 ms;
the hourly level (~12k rows) takes about one. Triggers rather than writer code:
every writer, the retention job and any hand-made fix keep the invariant
``hourly = sum(minutes of that hour)`` in the same transaction, on both databases.

On PostgreSQL statement-level triggers run at the end of the writer's statement
and upsert the hourly rows in (task_name, status, bucket_start) order, after all
of the statement's minute rows, which the writers insert in the same order: they
cannot deadlock on them. SQLite has row-level triggers only; they run in its
own process, without a procedural language's call cost.
"""

from __future__ import annotations

# One statement-level trigger per operation, reading the statement's transition
# tables: one set-based upsert per writer statement. A row-level trigger ran one
# plpgsql call per (minute, task, status) of the batch: with many task names nearly
# one per row. benchmarks/bench_store.py: 12-23 us less of the server's CPU per
# finished row with 200 interleaved names, 0.5-1.5 us with a few names per batch.
_PG_HOUR = "date_trunc('hour', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
_PG_NEW = "SELECT bucket_start, task_name, status, count, duration_ms_sum FROM new_rows"
_PG_OLD = (
    "SELECT bucket_start, task_name, status, -count AS count, "
    "-duration_ms_sum AS duration_ms_sum FROM old_rows"
)
# The writers' lock order (pg_writer): no deadlocks.
_PG_UPSERT = f"""
        INSERT INTO task_execution_rollups_hourly AS h
            (bucket_start, task_name, status, count, duration_ms_sum)
        SELECT {_PG_HOUR}, task_name, status, sum(count), sum(duration_ms_sum)
        FROM ({{changes}}) AS changes
        GROUP BY 1, 2, 3
        ORDER BY 2, 3, 1
        ON CONFLICT (bucket_start, task_name, status) DO UPDATE
        SET count = h.count + excluded.count,
            duration_ms_sum = h.duration_ms_sum + excluded.duration_ms_sum;"""
# Each branch names only the transition tables its trigger declares (plpgsql plans
# a statement when it first runs it).
PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION task_execution_rollups_to_hourly() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN{_PG_UPSERT.format(changes=_PG_NEW)}
    ELSIF TG_OP = 'UPDATE' THEN{_PG_UPSERT.format(changes=f"{_PG_NEW} UNION ALL {_PG_OLD}")}
    ELSE
        UPDATE task_execution_rollups_hourly AS h
        SET count = h.count + d.count, duration_ms_sum = h.duration_ms_sum + d.duration_ms_sum
        FROM (SELECT {_PG_HOUR} AS hour, task_name, status,
                     sum(count) AS count, sum(duration_ms_sum) AS duration_ms_sum
              FROM ({_PG_OLD}) AS changes GROUP BY 1, 2, 3) AS d
        WHERE h.bucket_start = d.hour AND h.task_name = d.task_name AND h.status = d.status;
        DELETE FROM task_execution_rollups_hourly AS h
        USING (SELECT DISTINCT {_PG_HOUR} AS hour, task_name, status FROM old_rows) AS d
        WHERE h.bucket_start = d.hour AND h.task_name = d.task_name AND h.status = d.status
          AND h.count <= 0;
    END IF;
    RETURN NULL;
END
$$
"""
_PG_TRIGGER = (
    "CREATE TRIGGER task_execution_rollups_hourly_{op} AFTER {event} ON task_execution_rollups "
    "REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION task_execution_rollups_to_hourly()"
)
PG_TRIGGERS = (
    _PG_TRIGGER.format(op="ins", event="INSERT", tables="NEW TABLE AS new_rows"),
    _PG_TRIGGER.format(
        op="upd", event="UPDATE", tables="OLD TABLE AS old_rows NEW TABLE AS new_rows"
    ),
    _PG_TRIGGER.format(op="del", event="DELETE", tables="OLD TABLE AS old_rows"),
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
        return (PG_FUNCTION, *PG_TRIGGERS)
    if dialect == "sqlite":
        return SQLITE_TRIGGERS
    return ()


def backfill_statement(dialect: str) -> str:
    return BACKFILL_PG if dialect == "postgresql" else BACKFILL_SQLITE
