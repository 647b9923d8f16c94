"""Retried attempts in the log and in the rollups.

A failed attempt that a retry middleware sent again is not what decided its task's
outcome. The middleware knows that when the attempt finishes and writes it in the
row (``retried``); the writers count those rows per minute next to ``count``, and
the hourly triggers carry the count up. The summary's per-task outcome then reads
the rollups alone, over any window, instead of probing the log once per failed
attempt.

Rows written before this revision have ``retried`` NULL. On SQLite the upgrade
marks the failed ones that a later attempt of the same task id followed (what the
summary computed at read time before) and counts them in the rollups. On
PostgreSQL that is done after the upgrade, day by day in short transactions
(exporter.store.retried, run by ``taskiq-exporter db upgrade``): one transaction
over a large log would hold this migration's lock on it while it ran.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence
from importlib import import_module
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLLUP_TABLES = ("task_execution_rollups", "task_execution_rollups_hourly")

# PostgreSQL: the statement-level triggers' function of 0003, with ``retried``.
_HOUR = "date_trunc('hour', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
_NEW = "SELECT bucket_start, task_name, status, count, duration_ms_sum, retried FROM new_rows"
_OLD = (
    "SELECT bucket_start, task_name, status, -count AS count, "
    "-duration_ms_sum AS duration_ms_sum, -retried AS retried FROM old_rows"
)
_UPSERT = f"""
        INSERT INTO task_execution_rollups_hourly AS h
            (bucket_start, task_name, status, count, duration_ms_sum, retried)
        SELECT {_HOUR}, task_name, status, sum(count), sum(duration_ms_sum), sum(retried)
        FROM ({{changes}}) AS changes
        GROUP BY 1, 2, 3
        ORDER BY 2, 3, 1
        ON CONFLICT (bucket_start, task_name, status) DO UPDATE
        SET count = h.count + excluded.count,
            duration_ms_sum = h.duration_ms_sum + excluded.duration_ms_sum,
            retried = h.retried + excluded.retried;"""  # noqa: S608 - built from constants, no input
PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION task_execution_rollups_to_hourly() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN{_UPSERT.format(changes=_NEW)}
    ELSIF TG_OP = 'UPDATE' THEN{_UPSERT.format(changes=f"{_NEW} UNION ALL {_OLD}")}
    ELSE
        UPDATE task_execution_rollups_hourly AS h
        SET count = h.count + d.count, duration_ms_sum = h.duration_ms_sum + d.duration_ms_sum,
            retried = h.retried + d.retried
        FROM (SELECT {_HOUR} AS hour, task_name, status, sum(count) AS count,
                     sum(duration_ms_sum) AS duration_ms_sum, sum(retried) AS retried
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

# SQLite: 0002's row-level triggers, with ``retried``.
_SQLITE_HOUR = "substr({row}.bucket_start, 1, 13) || ':00:00.000000'"
_ADD = f"""
    INSERT INTO task_execution_rollups_hourly
        (bucket_start, task_name, status, count, duration_ms_sum, retried)
    VALUES ({_SQLITE_HOUR.format(row="NEW")}, NEW.task_name, NEW.status, NEW.count,
            NEW.duration_ms_sum, NEW.retried)
    ON CONFLICT (bucket_start, task_name, status) DO UPDATE
    SET count = count + excluded.count,
        duration_ms_sum = duration_ms_sum + excluded.duration_ms_sum,
        retried = retried + excluded.retried;
"""  # noqa: S608 - built from constants, no input
_SUB = f"""
    UPDATE task_execution_rollups_hourly
    SET count = count - OLD.count, duration_ms_sum = duration_ms_sum - OLD.duration_ms_sum,
        retried = retried - OLD.retried
    WHERE bucket_start = {_SQLITE_HOUR.format(row="OLD")}
      AND task_name = OLD.task_name AND status = OLD.status;
"""  # noqa: S608 - built from constants, no input
_PRUNE = f"""
    DELETE FROM task_execution_rollups_hourly
    WHERE bucket_start = {_SQLITE_HOUR.format(row="OLD")}
      AND task_name = OLD.task_name AND status = OLD.status AND count <= 0;
"""  # noqa: S608 - built from constants, no input
SQLITE_TRIGGERS = {
    "ins": f"AFTER INSERT ON task_execution_rollups BEGIN {_ADD} END",
    "upd": f"AFTER UPDATE ON task_execution_rollups BEGIN {_SUB} {_ADD} END",
    "del": f"AFTER DELETE ON task_execution_rollups BEGIN {_SUB} {_PRUNE} END",
}

# The failed rows that a later attempt of their task id followed (SQLite).
_MARK_RETRIED = """
UPDATE task_execution_logs SET retried = EXISTS (
    SELECT 1 FROM task_execution_logs AS later
    WHERE later.task_id = task_execution_logs.task_id
      AND later.attempt > task_execution_logs.attempt
)
WHERE status = 'failed'
"""
# The minute rollups' counts from the marked rows (the hourly triggers follow).
_COUNT_RETRIED = """
UPDATE task_execution_rollups AS r SET retried = m.n
FROM (SELECT substr(created_at, 1, 17) || '00.000000' AS bucket_start, task_name,
             count(*) AS n
      FROM task_execution_logs WHERE status = 'failed' AND retried
      GROUP BY 1, 2) AS m
WHERE r.bucket_start = m.bucket_start AND r.task_name = m.task_name AND r.status = 'failed'
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # No default: adding the column touches no row, at any size of the log.
    op.add_column("task_execution_logs", sa.Column("retried", sa.Boolean(), nullable=True))
    for table in ROLLUP_TABLES:
        op.add_column(
            table, sa.Column("retried", sa.BigInteger(), nullable=False, server_default="0")
        )
    if postgres:
        op.execute(PG_FUNCTION)
        return
    for name, body in SQLITE_TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS task_execution_rollups_hourly_{name}")
        op.execute(f"CREATE TRIGGER task_execution_rollups_hourly_{name} {body}")
    op.execute(_MARK_RETRIED)
    op.execute(_COUNT_RETRIED)


def _revision(name: str) -> ModuleType:
    """An earlier migration of this folder: its DDL is restored by the downgrade."""
    return import_module(f"exporter.migrations.versions.{name}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_revision("0003_hourly_statement_triggers").PG_FUNCTION)
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS task_execution_rollups_hourly_{name}")
        for statement in _revision("0002_hourly_rollups").SQLITE_TRIGGERS:
            op.execute(statement)
    for table in ROLLUP_TABLES:
        op.drop_column(table, "retried")
    op.drop_column("task_execution_logs", "retried")
