"""The SQL of the panels that read the execution log and its rollups.

Every value a user picks or types reaches the SQL as ``${var:sqlstring}`` in code
(dashboards/sql.py): one quoted literal per value. Every query of log rows filters
``$__timeFilter(created_at)``, so PostgreSQL reads only the partitions of the time
range, and ends in ``ORDER BY ... LIMIT``; the per-task counts read the rollups, and
the log only through its partial index on live (pending, running) rows.

These strings are never run by Python: Grafana fills them in, and the only values
they take from users are the sqlstring-quoted variables (hence the S608 waivers).
"""

from __future__ import annotations

from dashboards.common import TASK_ALL_LITERAL
from dashboards.sql import DETAILS_VIEW, LOG_VIEW, SAFE_FORMAT
from exporter.metrics import names as n

TASK = n.LABEL_TASK_NAME
STATUS = "status"
ERROR = "error"
ATTEMPT = "attempt"
STATUSES = ("pending", "running", "success", "failed")
LIVE = "status IN ('pending', 'running')"
TABLE_LIMIT = 500
LIVE_LIMIT = 50
ATTEMPTS_LIMIT = 50
# Hidden columns of every row listing: the attempt's time range in epoch
# milliseconds (an hour either side), for the data links' from= and to=.
RANGE_FROM = "range_from"
RANGE_TO = "range_to"
RANGE_COLUMNS = (
    "  (date_part('epoch', created_at - interval '1 hour') * 1000)::bigint"
    f" AS {RANGE_FROM},\n"
    "  (date_part('epoch', greatest(created_at, updated_at) + interval '1 hour') * 1000)::bigint"
    f" AS {RANGE_TO}"
)


def var(name: str) -> str:
    return f"${{{name}:{SAFE_FORMAT}}}"


def task_filter() -> str:
    """The SQL condition for the task_name variable. Its values arrive as quoted SQL
    literals (sqlstring escapes them); "All" arrives as the literal of
    common.TASK_ALL_VALUE, as Grafana inserts a custom all value unformatted."""
    values = var(TASK)
    return f"('{TASK_ALL_LITERAL}' IN ({values}) OR {TASK} IN ({values}))"


def status_filter() -> str:
    """The status variable: a custom variable without a custom all value, so "All"
    arrives as every status, quoted."""
    return f"status IN ({var(STATUS)})"


def error_filter() -> str:
    """The error text box: empty means no filter; otherwise a case-insensitive
    substring of the error message, the value's backslashes, % and _ escaped so
    that ILIKE reads them as themselves."""
    value = var(ERROR)
    escaped = f"replace(replace(replace({value}, '\\', '\\\\'), '%', '\\%'), '_', '\\_')"
    return f"({value} = '' OR error_message ILIKE ('%' || {escaped} || '%'))"


def _as_id(value: str) -> str:
    # The literal is text first: a string literal cast straight to bigint is
    # converted while the query is parsed, whatever the CASE says. A cast of text
    # is evaluated only when its branch is taken, and a false constant branch is
    # dropped before that.
    return (
        f"CASE WHEN length({value}) BETWEEN 1 AND 18 AND {value} !~ '[^0-9]' "
        f"THEN CAST(CAST({value} AS text) AS bigint) END"
    )


def attempt_match() -> str:
    """The attempt box names an attempt (its log id) or a task id."""
    value = var(ATTEMPT)
    return f"(id = {_as_id(value)} OR task_id = {value})"


def attempt_filter() -> str:
    """The history dashboard's attempt box: empty means no filter."""
    return f"({var(ATTEMPT)} = '' OR {attempt_match()})"


def executions() -> str:
    """The history table: attempts of the selected tasks and statuses in the range."""
    return (
        "SELECT\n  id,\n  created_at,\n  task_name,\n  status,\n  attempt,\n  started_at,\n"
        "  duration_ms,\n  queue_wait_ms,\n  worker_host,\n  error_message,\n  task_id,\n"
        f"{RANGE_COLUMNS}\n"
        f"FROM {LOG_VIEW}\n"
        "WHERE $__timeFilter(created_at)\n"
        f"  AND {task_filter()}\n"
        f"  AND {status_filter()}\n"
        f"  AND {error_filter()}\n"
        f"  AND {attempt_filter()}\n"
        "ORDER BY created_at DESC, id DESC\n"
        f"LIMIT {TABLE_LIMIT}"
    )


def live_activity() -> str:
    """The latest status changes: the attempts updated last (the log keeps one row
    per attempt, updated in place as its status moves)."""
    return (
        "SELECT\n  updated_at,\n  task_name,\n  status,\n  attempt,\n  duration_ms,\n"
        "  worker_host,\n  error_message,\n  id,\n  task_id,\n"
        f"{RANGE_COLUMNS}\n"
        f"FROM {LOG_VIEW}\n"
        "WHERE $__timeFilter(created_at)\n"
        f"  AND {task_filter()}\n"
        "ORDER BY updated_at DESC, id DESC\n"
        f"LIMIT {LIVE_LIMIT}"
    )


def task_health() -> str:
    """Per task: pending and running now (the log's partial index on live rows),
    success, failed and the mean duration of successes over the time range (whole
    hours from the hourly rollups, the minutes at either end from the minute
    rollups; the range is widened to whole minutes, in UTC)."""
    task = task_filter()
    return (
        "WITH bounds AS (\n"  # noqa: S608 (a Grafana template, see above)
        "  SELECT lo, hi,\n"
        "    date_trunc('hour', lo + interval '59 minutes', 'UTC') AS lo_hour,\n"
        "    date_trunc('hour', hi, 'UTC') AS hi_hour\n"
        "  FROM (SELECT\n"
        "    date_trunc('minute', $__timeFrom()::timestamptz, 'UTC') AS lo,\n"
        "    date_trunc('minute', $__timeTo()::timestamptz + interval '59.999999 seconds',"
        " 'UTC') AS hi\n"
        "  ) AS range_bounds\n"
        "), finished AS (\n"
        "  SELECT h.task_name, h.status, h.count, h.duration_ms_sum\n"
        "  FROM task_execution_rollups_hourly AS h, bounds AS b\n"
        "  WHERE h.bucket_start >= b.lo_hour AND h.bucket_start < b.hi_hour\n"
        f"    AND {task}\n"
        "  UNION ALL\n"
        "  SELECT m.task_name, m.status, m.count, m.duration_ms_sum\n"
        "  FROM task_execution_rollups AS m, bounds AS b\n"
        "  WHERE ((m.bucket_start >= b.lo AND m.bucket_start < least(b.lo_hour, b.hi))\n"
        "      OR (m.bucket_start >= greatest(b.hi_hour, b.lo_hour) AND m.bucket_start < b.hi))\n"
        f"    AND {task}\n"
        "), totals AS (\n"
        "  SELECT task_name,\n"
        "    coalesce(sum(count) FILTER (WHERE status = 'success'), 0)::bigint AS success,\n"
        "    coalesce(sum(count) FILTER (WHERE status = 'failed'), 0)::bigint AS failed,\n"
        "    sum(duration_ms_sum) FILTER (WHERE status = 'success')\n"
        "      / nullif(sum(count) FILTER (WHERE status = 'success'), 0)::float8"
        " AS avg_success_ms\n"
        "  FROM finished\n"
        "  GROUP BY task_name\n"
        "), live AS (\n"
        "  SELECT task_name,\n"
        "    count(*) FILTER (WHERE status = 'pending') AS pending,\n"
        "    count(*) FILTER (WHERE status = 'running') AS running\n"
        f"  FROM {LOG_VIEW}\n"
        f"  WHERE {LIVE}\n"
        f"    AND {task}\n"
        "  GROUP BY task_name\n"
        ")\n"
        "SELECT\n"
        "  task_name,\n"
        "  coalesce(live.pending, 0) AS pending,\n"
        "  coalesce(live.running, 0) AS running,\n"
        "  coalesce(totals.success, 0) AS success,\n"
        "  coalesce(totals.failed, 0) AS failed,\n"
        "  totals.avg_success_ms,\n"
        "  totals.success::float8 / nullif(totals.success + totals.failed, 0) AS success_rate\n"
        "FROM totals FULL JOIN live USING (task_name)\n"
        "ORDER BY task_name"
    )


def task_names() -> str:
    """The history dashboard's task_name variable: every task with finished attempts
    in the time range (hourly rollups) or live attempts now."""
    return (
        "SELECT task_name FROM task_execution_rollups_hourly\n"  # noqa: S608 (a Grafana template, see above)
        "WHERE bucket_start >= date_trunc('hour', $__timeFrom()::timestamptz, 'UTC')\n"
        "  AND bucket_start < $__timeTo()::timestamptz\n"
        "UNION\n"
        f"SELECT task_name FROM {LOG_VIEW} WHERE {LIVE}\n"
        "ORDER BY 1"
    )


def attempt() -> str:
    """The attempt the box names (an id, or the latest attempt of a task id)."""
    return (
        "SELECT\n  id,\n  task_name,\n  status,\n  attempt,\n  task_id,\n  created_at,\n"
        "  queued_at,\n  started_at,\n  completed_at,\n  duration_ms,\n  queue_wait_ms,\n"
        "  worker_host,\n  worker_pid,\n  error_message,\n"
        f"{RANGE_COLUMNS}\n"
        f"FROM {LOG_VIEW}\n"
        "WHERE $__timeFilter(created_at)\n"
        f"  AND {attempt_match()}\n"
        "ORDER BY created_at DESC, attempt DESC\n"
        "LIMIT 1"
    )


def attempt_text(column: str, expression: str) -> str:
    """One text of the attempt the box names (the same attempt as ``attempt()``),
    from the details view, as the only text column (a logs panel shows its first)."""
    return (
        "SELECT chosen.* FROM (\n"  # noqa: S608 (a Grafana template, see above)
        f'  SELECT created_at AS "time", {expression} AS {column}\n'
        f"  FROM {DETAILS_VIEW}\n"
        "  WHERE $__timeFilter(created_at)\n"
        f"    AND {attempt_match()}\n"
        "  ORDER BY created_at DESC, attempt DESC\n"
        "  LIMIT 1\n"
        ") AS chosen\n"
        f"WHERE chosen.{column} IS NOT NULL"
    )


def attempts_of_task() -> str:
    """Every attempt of the task id of the attempt the box names, newest first."""
    return (
        "SELECT\n  id,\n  attempt,\n  status,\n  created_at,\n  started_at,\n  duration_ms,\n"  # noqa: S608 (a Grafana template, see above)
        "  queue_wait_ms,\n  worker_host,\n  error_message,\n  task_name,\n  task_id,\n"
        f"{RANGE_COLUMNS}\n"
        f"FROM {LOG_VIEW}\n"
        "WHERE $__timeFilter(created_at)\n"
        "  AND task_id IN (\n"
        f"    SELECT task_id FROM {LOG_VIEW}\n"
        "    WHERE $__timeFilter(created_at)\n"
        f"      AND {attempt_match()}\n"
        "  )\n"
        "ORDER BY created_at DESC, attempt DESC\n"
        f"LIMIT {ATTEMPTS_LIMIT}"
    )
