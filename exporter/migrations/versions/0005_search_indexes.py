"""PostgreSQL: a trigram index on failed attempts' error messages, for the history's
``error`` search.

pg_trgm is a trusted extension: a role with CREATE on the database may create it.
A role without that privilege (or a server without the extension) upgrades all
the same, with a warning: the search then reads the failed rows of its range
without the index, slower. ``taskiq-exporter db search-index error --create``
builds it later, once someone allowed has run ``CREATE EXTENSION pg_trgm``.

The index on ``params`` for the ``param.<key>`` search is not made here: it costs
every write (docs/scaling.md), so it is opt-in (``db search-index params``); this
downgrade drops it too. On a partitioned log an index made on the table is made on
every partition, and on the partitions made later. SQLite is unchanged.

Revision ID: 0005
Revises: 0004
"""

import logging
from collections.abc import Sequence

from alembic import op
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


logger = logging.getLogger(__name__)

LOG = "task_execution_logs"
ERROR_INDEX = f"ix_{LOG}_error_trgm"
PARAMS_INDEX = f"ix_{LOG}_params"
# The same definition as `db search-index error` (exporter/cli/search_index.py).
ERROR_DDL = (
    f"CREATE INDEX IF NOT EXISTS {ERROR_INDEX} ON {LOG} "
    "USING gin (error_message {schema}.gin_trgm_ops) WHERE status = 'failed'"
)
TRGM_SCHEMA = (
    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
    "WHERE e.extname = 'pg_trgm'"
)


def _trgm_schema(bind: Connection) -> str | None:
    """pg_trgm's schema, creating the extension when missing; None when this role
    may not (or the server does not have it)."""
    schema = bind.execute(text(TRGM_SCHEMA)).scalar()
    if schema is None:
        try:
            with bind.begin_nested():  # a savepoint: the failure leaves the upgrade going
                bind.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        except DBAPIError as exc:
            logger.warning(
                "taskiq-exporter: no trigram index for the history's error search: cannot "
                "create the extension pg_trgm (%s). The search works without it, slower. To "
                "add it: as a role with CREATE on the database (or a superuser) run "
                "CREATE EXTENSION pg_trgm; then taskiq-exporter db search-index error --create",
                str(exc.orig).splitlines()[0] if exc.orig else exc,
            )
            return None
        schema = bind.execute(text(TRGM_SCHEMA)).scalar()
    return None if schema is None else str(schema)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = _trgm_schema(bind)
    if schema is not None:
        quoted = '"' + schema.replace('"', '""') + '"'
        op.execute(ERROR_DDL.format(schema=quoted))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"DROP INDEX IF EXISTS {ERROR_INDEX}")
    op.execute(f"DROP INDEX IF EXISTS {PARAMS_INDEX}")
