"""PostgreSQL: the execution log partitioned by range of created_at.

The key of a row becomes (task_id, attempt, created_at) and the primary key
(id, created_at): PostgreSQL's unique indexes on a partitioned table must hold
its partition key. A table with rows is not copied: it becomes the partition
``task_execution_logs_legacy`` for everything before the end of the day after
the upgrade (rows stamped later than that, if any, move to the default
partition), which retention empties and drops in time. The new table takes over
the id sequence, the grants and the views of the old one. The partitions from
then on are made by ``taskiq-exporter db upgrade`` and the service's maintenance
(exporter/store/partitions.py). SQLite is unchanged.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from alembic import op
from sqlalchemy import text
from sqlalchemy.engine import Connection

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOG = "task_execution_logs"
LEGACY = "task_execution_logs_legacy"
DEFAULT = "task_execution_logs_default"
SEQUENCE = "task_execution_logs_id_seq"

# The columns at this revision, in 0001's order (rows move with SELECT *).
_COLUMNS = f"""
    id bigint NOT NULL DEFAULT nextval('{SEQUENCE}'::regclass),
    task_name varchar(255) NOT NULL,
    status varchar(16) NOT NULL,
    task_id varchar(255) NOT NULL,
    attempt integer NOT NULL DEFAULT 1,
    params jsonb,
    queued_at timestamptz,
    started_at timestamptz,
    completed_at timestamptz,
    duration_ms double precision,
    queue_wait_ms double precision,
    error_message text,
    error_traceback text,
    worker_host varchar(255),
    worker_pid integer,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL"""
# (suffix, columns, predicate): the indexes of 0001, named ix_<table>_<suffix>.
_INDEXES = (
    ("name_status_created", "task_name, status, created_at", ""),
    ("created_at", "created_at", ""),
    ("task_name", "task_name", ""),
    ("status", "status", ""),
    ("updated_at", "updated_at", ""),
    ("active", "status, started_at", " WHERE status IN ('pending', 'running')"),
)


def _scalar(bind: Connection, sql: str) -> object:
    return bind.execute(text(sql)).scalar()


def _kind(bind: Connection) -> object:
    return _scalar(bind, f"SELECT relkind::text FROM pg_class WHERE oid = to_regclass('{LOG}')")


def _views(bind: Connection) -> list[tuple[str, str]]:
    """The views reading the log, with their definitions as they read now."""
    rows = bind.execute(
        text(
            "SELECT DISTINCT v.oid::regclass::text, pg_get_viewdef(v.oid) "
            "FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
            "JOIN pg_class v ON v.oid = r.ev_class "
            f"WHERE d.refobjid = '{LOG}'::regclass AND v.oid <> d.refobjid AND v.relkind = 'v'"
        )
    ).all()
    return [(str(name), str(body)) for name, body in rows]


def _rebind_views(views: list[tuple[str, str]]) -> None:
    # CREATE OR REPLACE keeps the views' owners and grants; the name in their
    # text now resolves to the new table.
    for name, body in views:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {body}")


Grant = tuple[str, str, str]


def _grants(bind: Connection, table: str) -> list[Grant]:
    """(privilege, grantee, " (column)" or "") of every privilege others hold on
    ``table``, column privileges included."""
    rows = bind.execute(
        text(
            "SELECT a.privilege_type, a.grantee::regrole::text, '' "
            "FROM pg_class c, aclexplode(c.relacl) a "
            f"WHERE c.oid = '{table}'::regclass AND a.grantee <> 0 AND a.grantee <> c.relowner "
            "UNION ALL "
            "SELECT a.privilege_type, a.grantee::regrole::text, "
            "' (' || quote_ident(att.attname) || ')' "
            "FROM pg_attribute att, aclexplode(att.attacl) a "
            f"WHERE att.attrelid = '{table}'::regclass AND a.grantee <> 0"
        )
    ).all()
    return [(str(p), str(g), str(c)) for p, g, c in rows]


def _apply_grants(grants: list[Grant], table: str) -> None:
    for privilege, grantee, column in grants:
        op.execute(f"GRANT {privilege}{column} ON {table} TO {grantee}")


def _create_partitioned() -> None:
    op.execute(
        f"CREATE TABLE {LOG} ({_COLUMNS},"
        f" CONSTRAINT {LOG}_pkey PRIMARY KEY (id, created_at),"
        " CONSTRAINT uq_task_execution_logs_task_id_attempt_created"
        " UNIQUE (task_id, attempt, created_at)"
        ") PARTITION BY RANGE (created_at)"
    )
    for suffix, columns, where in _INDEXES:
        op.execute(f"CREATE INDEX ix_{LOG}_{suffix} ON {LOG} ({columns}){where}")
    op.execute(f"ALTER SEQUENCE {SEQUENCE} OWNED BY {LOG}.id")
    op.execute(f"CREATE TABLE {DEFAULT} PARTITION OF {LOG} DEFAULT")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or _kind(bind) == "p":
        return
    op.execute(f"LOCK TABLE {LOG} IN ACCESS EXCLUSIVE MODE")
    views, grants = _views(bind), _grants(bind, LOG)
    keep = bool(_scalar(bind, f"SELECT EXISTS (SELECT 1 FROM {LOG})"))
    op.execute(f"ALTER SEQUENCE {SEQUENCE} OWNED BY NONE")
    if keep:
        # The keys the partitioned table needs, on the old rows (a unique index
        # built by `taskiq-exporter db upgrade` beforehand, concurrently, is used).
        op.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {LEGACY}_pkey ON {LOG} (id, created_at)")
        key = "task_id, attempt, created_at"
        op.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {LEGACY}_key ON {LOG} ({key})")
    op.execute(f"ALTER TABLE {LOG} DROP CONSTRAINT {LOG}_pkey")
    op.execute(f"ALTER TABLE {LOG} DROP CONSTRAINT uq_task_execution_logs_task_id_attempt")
    if keep:
        op.execute(
            f"ALTER TABLE {LOG} ADD CONSTRAINT {LEGACY}_pkey PRIMARY KEY USING INDEX {LEGACY}_pkey"
        )
        op.execute(f"ALTER TABLE {LOG} ADD CONSTRAINT {LEGACY}_key UNIQUE USING INDEX {LEGACY}_key")
    for suffix, _columns, _where in _INDEXES:
        op.execute(f"ALTER INDEX ix_{LOG}_{suffix} RENAME TO {LEGACY}_{suffix}")
    op.execute(f"ALTER TABLE {LOG} RENAME TO {LEGACY}")
    _create_partitioned()
    _rebind_views(views)  # before the old table can go: they read it until now
    if keep:
        now = bind.execute(text("SELECT now()")).scalar()
        assert isinstance(now, datetime)
        end = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        until = f"'{(end + timedelta(days=2)).isoformat()}'"
        op.execute(
            f"WITH moved AS (DELETE FROM {LEGACY} WHERE created_at >= {until} RETURNING *) "
            f"INSERT INTO {DEFAULT} SELECT * FROM moved"
        )
        op.execute(
            f"ALTER TABLE {LOG} ATTACH PARTITION {LEGACY} FOR VALUES FROM (MINVALUE) TO ({until})"
        )
    else:
        op.execute(f"DROP TABLE {LEGACY}")
    _apply_grants(grants, LOG)


def downgrade() -> None:
    """Back to one table: the rows are copied (one per attempt: where a task id and
    attempt were stored under two created_at, the one updated last)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or _kind(bind) != "p":
        return
    op.execute(f"LOCK TABLE {LOG} IN ACCESS EXCLUSIVE MODE")
    views, grants = _views(bind), _grants(bind, LOG)
    op.execute(f"CREATE TABLE {LOG}_plain ({_COLUMNS})")
    op.execute(
        f"INSERT INTO {LOG}_plain SELECT DISTINCT ON (task_id, attempt) * FROM {LOG} "
        "ORDER BY task_id, attempt, updated_at DESC"
    )
    op.execute(f"ALTER SEQUENCE {SEQUENCE} OWNED BY NONE")
    op.execute(f"ALTER TABLE {LOG} RENAME TO {LOG}_partitioned")
    op.execute(f"ALTER TABLE {LOG}_plain RENAME TO {LOG}")
    _rebind_views(views)
    op.execute(f"DROP TABLE {LOG}_partitioned")
    op.execute(f"ALTER TABLE {LOG} ADD CONSTRAINT {LOG}_pkey PRIMARY KEY (id)")
    op.execute(
        f"ALTER TABLE {LOG} ADD CONSTRAINT uq_task_execution_logs_task_id_attempt "
        "UNIQUE (task_id, attempt)"
    )
    for suffix, columns, where in _INDEXES:
        op.execute(f"CREATE INDEX ix_{LOG}_{suffix} ON {LOG} ({columns}){where}")
    op.execute(f"ALTER SEQUENCE {SEQUENCE} OWNED BY {LOG}.id")
    _apply_grants(grants, LOG)
