"""Every SQL panel and SQL variable of the dashboards, expanded as Grafana expands
them (dashboards/interpolation.py), run as Grafana's reader role (roles.sql and
grants.sql) on a seeded execution log, and compared with the rows the seed implies,
computed here in Python: filters, hostile text-box values, "All", the rollups'
hour and minute pieces, ordering and limits; and PostgreSQL's plans: the health
panel reads the log only through its partial index, the row listings only the
partitions of the time range.

Needs PostgreSQL and psql: skipped locally when one is missing, a failure when
``CI`` is set.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from dashboards.common import EXECUTION_UID, HISTORY_UID
from dashboards.interpolation import Value
from dashboards.queries import SqlQuery, sql_queries, sql_variable_queries, substitute_sql
from exporter.store import partitions
from exporter.store.engine import make_engine
from exporter.store.migrate import upgrade
from exporter.store.pg_admin import asyncpg_dsn, drop_database
from tests.integration.test_db_roles import Roles, _psql, create_roles, drop_roles, fetch, grant

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)
BASE = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
MINUTE = timedelta(minutes=1)
QUOTED = "o'brien"
BULK = 520  # more rows than the history table shows (500)


@dataclass
class Row:
    """One seeded attempt; ``at`` is minutes after BASE."""

    task_name: str
    status: str
    at: float
    task_id: str = ""
    attempt: int = 1
    duration_ms: float | None = None
    error: str | None = None
    traceback: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    id: int = 0

    @property
    def created(self) -> datetime:
        return BASE + timedelta(minutes=self.at)

    @property
    def updated(self) -> datetime:
        if self.status == "pending":
            return self.created
        return self.created + timedelta(milliseconds=100 + (self.duration_ms or 0))


def _failed(at: float, error: str, task: str = "app:fail", **kw: Any) -> Row:
    traceback = f'Traceback (most recent call last):\n  File "app.py", line 3\n{error}\n'
    params = {"args": [int(at)], "kwargs": {"token": "[redacted]"}, "_redacted": ["kwargs.token"]}
    return Row(
        task, "failed", at, duration_ms=7.0, error=error, traceback=traceback, params=params, **kw
    )


def seed() -> list[Row]:
    rows = [Row("app:ok", "success", at, duration_ms=10.0 * i) for i, at in enumerate(
        (2, 31, 59, 61.5, 95, 121, 150, 179, 200), start=1)]  # fmt: skip
    rows += [
        _failed(33, "ValueError: 100% broken"),
        _failed(34, "ValueError: 1000 rows lost"),
        _failed(62, "KeyError: 'user_id'"),
        _failed(63, "ValueError: invalid input"),
        _failed(90, "OSError: C:\\temp\\x_y missing"),
        _failed(91, "OSError: C:temp x_y"),
        _failed(100, "TimeoutError: slow", QUOTED, task_id="tid-1", attempt=1),
        _failed(101, "TimeoutError: slower", QUOTED, task_id="tid-1", attempt=2),
        Row(QUOTED, "success", 102.5, task_id="tid-1", attempt=3, duration_ms=5.0),
        Row(QUOTED, "running", 150),
        Row("app:ok", "pending", -2 * 24 * 60),
        Row("app:ok", "pending", -2 * 24 * 60 + 1),
        _failed(-2 * 24 * 60 + 2, "ValueError: ancient"),
    ]
    rows += [Row("app:bulk", "success", 180 + i * 55 / BULK, duration_ms=1.0) for i in range(BULK)]
    for i, row in enumerate(rows):
        row.task_id = row.task_id or f"t-{i}"
    return rows


INSERT = """
INSERT INTO task_execution_logs (task_name, status, task_id, attempt, params, queued_at,
    started_at, completed_at, duration_ms, queue_wait_ms, error_message, error_traceback,
    worker_host, worker_pid, created_at, updated_at)
SELECT r.task_name, r.status, r.task_id, r.attempt, r.params, r.created_at,
    CASE WHEN r.status <> 'pending' THEN r.created_at + interval '100 ms' END,
    CASE WHEN r.status IN ('success', 'failed') THEN r.updated_at END,
    r.duration_ms, CASE WHEN r.status <> 'pending' THEN 100.0 END, r.error_message,
    r.error_traceback, 'host-1', 42, r.created_at, r.updated_at
FROM jsonb_to_recordset($1::jsonb) AS r (task_name text, status text, task_id text,
    attempt int, params jsonb, duration_ms float8, error_message text, error_traceback text,
    created_at timestamptz, updated_at timestamptz)
ORDER BY r.created_at
RETURNING id, task_id, attempt
"""
# The writer's rollups: one row per minute of created_at, task and final status;
# the hourly rollups follow by trigger.
ROLLUP = """
INSERT INTO task_execution_rollups (bucket_start, task_name, status, count, duration_ms_sum)
SELECT date_trunc('minute', created_at), task_name, status, count(*), sum(duration_ms)
FROM task_execution_logs WHERE status IN ('success', 'failed')
GROUP BY 1, 2, 3
"""


@dataclass(frozen=True)
class Seeded:
    roles: Roles
    rows: list[Row]

    @property
    def reader(self) -> str:
        return self.roles.url("reader")

    def by_error(self, text: str) -> Row:
        return next(r for r in self.rows if r.error == text)


@pytest.fixture
async def seeded(pg_url: str) -> AsyncIterator[Seeded]:
    """A migrated store with its roles and grants, partitions from three days
    back, and the seed written by the owner."""
    _psql()
    roles = Roles.random(pg_url)
    try:
        create_roles(roles)
        await upgrade(roles.url("owner"))
        owner = make_engine(roles.url("owner"))
        try:
            await partitions.ensure(
                owner, interval_hours=24, ahead_hours=24 * 5, keep_days=30,
                now=NOW - timedelta(days=3),
            )  # fmt: skip
        finally:
            await owner.dispose()
        grant(roles)
        rows = seed()
        payload = [
            {
                "task_name": r.task_name, "status": r.status, "task_id": r.task_id,
                "attempt": r.attempt, "params": r.params or None, "duration_ms": r.duration_ms,
                "error_message": r.error, "error_traceback": r.traceback,
                "created_at": r.created.isoformat(), "updated_at": r.updated.isoformat(),
            }
            for r in rows
        ]  # fmt: skip
        conn = await asyncpg.connect(asyncpg_dsn(roles.url("owner")))
        try:
            ids = {(r["task_id"], r["attempt"]): r["id"] for r in
                   await conn.fetch(INSERT, json.dumps(payload))}  # fmt: skip
            await conn.execute(ROLLUP)
        finally:
            await conn.close()
        for row in rows:
            row.id = ids[(row.task_id, row.attempt)]
        yield Seeded(roles, rows)
    finally:
        await drop_database(pg_url)
        drop_roles(roles)


def query(dashboard: str, panel: str) -> SqlQuery:
    found = [q for q in [*sql_queries(), *sql_variable_queries()]
             if (q.dashboard, q.panel) == (dashboard, panel)]  # fmt: skip
    assert len(found) == 1, (dashboard, panel)
    return found[0]


def iso(at: datetime) -> str:
    return at.isoformat()


async def run(
    url: str,
    q: SqlQuery,
    *,
    start: datetime,
    end: datetime,
    tasks: Sequence[str] | None = None,
    session: Mapping[str, str] | None = None,
    **values: Value,
) -> list[asyncpg.Record]:
    """The panel's query as Grafana runs it, as ``url`` (a read-only session)."""
    sql = substitute_sql(q.sql, start=iso(start), end=iso(end), task_names=tasks, values=values)
    conn = await asyncpg.connect(asyncpg_dsn(url), server_settings=dict(session or {}))
    try:
        async with conn.transaction(readonly=True):
            return list(await conn.fetch(sql))
    finally:
        await conn.close()


# The oracle: what each panel must return, from the seed alone.


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def expected_health(
    rows: Sequence[Row], start: datetime, end: datetime, tasks: Sequence[str] | None = None
) -> list[tuple[Any, ...]]:
    lo = _minute(start)
    hi = _minute(end) if _minute(end) == end else _minute(end) + MINUTE
    names = sorted({r.task_name for r in rows})
    out = []
    for name in names:
        if tasks is not None and name not in tasks:
            continue
        mine = [r for r in rows if r.task_name == name]
        live = {s: sum(r.status == s for r in mine) for s in ("pending", "running")}
        done = [
            r for r in mine if r.status in ("success", "failed") and lo <= _minute(r.created) < hi
        ]
        ok = [r for r in done if r.status == "success"]
        failed = len(done) - len(ok)
        if not done and not any(live.values()):
            continue
        mean = sum(r.duration_ms or 0 for r in ok) / len(ok) if ok else None
        rate = len(ok) / len(done) if done else None
        out.append((name, live["pending"], live["running"], len(ok), failed, mean, rate))
    return out


def expected_ids(
    rows: Sequence[Row],
    start: datetime,
    end: datetime,
    *,
    tasks: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    error: str = "",
    attempt: str = "",
    limit: int = 500,
) -> list[int]:
    def keep(r: Row) -> bool:
        as_id = attempt.isascii() and attempt.isdigit() and len(attempt) <= 18
        return (
            start <= r.created <= end
            and (tasks is None or r.task_name in tasks)
            and (statuses is None or r.status in statuses)
            and (error == "" or error.lower() in (r.error or "").lower())
            and (attempt == "" or r.task_id == attempt or (as_id and r.id == int(attempt)))
        )

    chosen = sorted((r for r in rows if keep(r)), key=lambda r: (r.created, r.id), reverse=True)
    return [r.id for r in chosen[:limit]]


def _round_all(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows]


def _round(found: Sequence[asyncpg.Record]) -> list[tuple[Any, ...]]:
    return _round_all([tuple(record.values()) for record in found])


async def test_task_health_counts_come_from_the_rollups_and_live_rows(seeded: Seeded) -> None:
    q = query(HISTORY_UID, "Task health")
    ranges = [
        # Minutes at both ends and whole hours between; then inside one hour; then
        # whole hours only.
        (BASE + timedelta(minutes=30, seconds=17), BASE + timedelta(minutes=190, seconds=5)),
        (BASE + timedelta(minutes=62), BASE + timedelta(minutes=64, seconds=30)),
        (BASE + timedelta(hours=1), BASE + timedelta(hours=3)),
        (NOW - timedelta(days=7), NOW),
    ]  # fmt: skip
    for start, end in ranges:
        want = _round_all(expected_health(seeded.rows, start, end))
        got = _round(await run(seeded.reader, q, start=start, end=end))
        assert got == want, (start, end)
        # The same in a session time zone whose hours are not UTC hours.
        india = {"timezone": "Asia/Kolkata"}
        assert _round(await run(seeded.reader, q, start=start, end=end, session=india)) == want
    start, end = ranges[0]
    got = _round(await run(seeded.reader, q, start=start, end=end, tasks=[QUOTED, "app:fail"]))
    assert got == _round_all(expected_health(seeded.rows, start, end, [QUOTED, "app:fail"]))
    assert [r[0] for r in got] == ["app:fail", QUOTED]
    assert got[1][1:5] == (0, 1, 1, 2)  # o'brien: 1 running, 1 success, 2 failed
    assert await run(seeded.reader, q, start=start, end=end, tasks=["x') OR true --"]) == []


def _plan_nodes(plan: Any) -> Iterator[dict[str, Any]]:
    if isinstance(plan, dict):
        if "Node Type" in plan:
            yield plan
        for value in plan.values():
            yield from _plan_nodes(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from _plan_nodes(value)


async def _plan(url: str, sql: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("SET enable_seqscan = off")
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}")
        return list(_plan_nodes(json.loads(raw)))
    finally:
        await conn.close()


async def test_health_reads_the_log_only_through_its_partial_index(seeded: Seeded) -> None:
    q = query(HISTORY_UID, "Task health")
    sql = substitute_sql(q.sql, start=iso(NOW - timedelta(days=7)), end=iso(NOW))
    nodes = await _plan(seeded.reader, sql)
    log = [n for n in nodes if str(n.get("Relation Name", "")).startswith("task_execution_logs")]
    assert log, "the plan reads no live rows"
    partial = {
        r["indexname"]
        for r in await fetch(
            seeded.roles.database_url,
            "SELECT indexname FROM pg_indexes WHERE tablename LIKE 'task_execution_logs%' "
            "AND indexdef LIKE '%WHERE%'",
        )
    }
    for node in log:
        assert node["Node Type"] != "Seq Scan", node
        index = node.get("Index Name")
        if index is None:  # a Bitmap Heap Scan: its Bitmap Index Scan is below it
            index = next(n["Index Name"] for n in _plan_nodes(node) if "Index Name" in n)
        assert index in partial, node


async def _log_partitions(url: str) -> dict[str, tuple[datetime, datetime] | None]:
    rows = await fetch(
        url,
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'task_execution_logs'::regclass",
    )
    found: dict[str, tuple[datetime, datetime] | None] = {}
    for row in rows:
        bounds = re.findall(r"'([^']+)'", row["bound"])
        found[row["relname"]] = (
            (datetime.fromisoformat(bounds[0]), datetime.fromisoformat(bounds[1]))
            if len(bounds) == 2
            else None
        )
    return found


async def test_row_listings_read_only_the_partitions_of_the_time_range(seeded: Seeded) -> None:
    parts = await _log_partitions(seeded.roles.database_url)
    assert len(parts) >= 5
    start, end = BASE + timedelta(minutes=30), BASE + timedelta(minutes=100)
    wanted = {name for name, b in parts.items() if b is not None and b[0] <= end and start < b[1]}
    assert 1 <= len(wanted) <= 2
    for panel in ("Executions", "Live activity"):
        sql = substitute_sql(query(HISTORY_UID, panel).sql, start=iso(start), end=iso(end))
        nodes = await _plan(seeded.reader, sql)
        read = {str(n["Relation Name"]) for n in nodes if "Relation Name" in n}
        assert read == wanted, panel


async def test_the_executions_table_filters_as_the_boxes_say(seeded: Seeded) -> None:
    q, rows = query(HISTORY_UID, "Executions"), seeded.rows
    start, end = BASE, NOW

    async def ids(**kw: Any) -> list[int]:
        tasks = kw.pop("tasks", None)
        return [
            r["id"] for r in await run(seeded.reader, q, start=start, end=end, tasks=tasks, **kw)
        ]

    # Everything: the 500 newest rows of the range (the bulk task's), newest first.
    everything = await ids()
    assert len(everything) == 500
    assert everything == expected_ids(rows, start, end)
    fail = ["app:fail", QUOTED]
    assert await ids(tasks=fail) == expected_ids(rows, start, end, tasks=fail)
    assert len(await ids(tasks=fail)) == 10  # 6 + 3 attempts + 1 running, not the ancient one
    assert await ids(tasks=fail, status=["failed"]) == expected_ids(
        rows, start, end, tasks=fail, statuses=["failed"]
    )
    # "All" statuses is every status: the running row is there.
    running = next(r for r in rows if r.status == "running")
    assert running.id in await ids(tasks=[QUOTED])
    assert await ids(tasks=[QUOTED], status=["pending"]) == []
    # The error box: a substring, case-insensitive, %, _ and \ taken literally;
    # quotes and SQL in it are text; empty is no filter.
    cases = {
        "100%": ["ValueError: 100% broken"],
        "_id": ["KeyError: 'user_id'"],
        "C:\\temp\\x_y": ["OSError: C:\\temp\\x_y missing"],
        "'user_id'": ["KeyError: 'user_id'"],
        "valueerror": ["ValueError: invalid input", "ValueError: 1000 rows lost",
                       "ValueError: 100% broken"],
        "%": ["ValueError: 100% broken"],
        "\\": ["OSError: C:\\temp\\x_y missing"],
        "x' OR '1'='1": [],
        "%' OR true --": [],
        "'; DELETE FROM task_execution_rollups; --": [],
        "\\'": [],
    }  # fmt: skip
    for needle, messages in cases.items():
        got = await ids(tasks=None, error=needle)
        assert got == expected_ids(rows, start, end, error=needle), needle
        assert got == [seeded.by_error(m).id for m in messages], needle
    assert await ids(tasks=fail, error="") == await ids(tasks=fail)
    # The attempt box: a log id, or a task id; anything else matches nothing.
    key_error = seeded.by_error("KeyError: 'user_id'")
    assert await ids(attempt=str(key_error.id)) == [key_error.id]
    retried = [r.id for r in sorted(rows, key=lambda r: r.created, reverse=True)
               if r.task_id == "tid-1"]  # fmt: skip
    assert await ids(attempt="tid-1") == retried
    assert len(retried) == 3
    for hostile in ("1 OR 1=1", "' OR ''='", "99999999999999999999", "-1", "\uff11\uff12", " 1"):
        assert await ids(attempt=hostile) == expected_ids(rows, start, end, attempt=hostile) == []
    # A text box holding a Grafana macro: the server expands it inside the literal,
    # which breaks the statement; it does not run anything.
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await ids(error="$__timeFrom()")
    rollups = await fetch(
        seeded.roles.database_url, "SELECT count(*) AS n FROM task_execution_rollups"
    )
    assert rollups[0]["n"] > 0


async def test_the_live_activity_shows_the_latest_50_changes(seeded: Seeded) -> None:
    q = query(HISTORY_UID, "Live activity")
    assert q.time_from == "24h"
    start, end = NOW - timedelta(hours=24), NOW
    got = await run(seeded.reader, q, start=start, end=end)
    chosen = sorted((r for r in seeded.rows if start <= r.created <= end),
                    key=lambda r: (r.updated, r.id), reverse=True)  # fmt: skip
    assert [r["id"] for r in got] == [r.id for r in chosen[:50]]
    got = await run(seeded.reader, q, start=start, end=end, tasks=[QUOTED])
    assert [(r["status"], r["attempt"]) for r in got] == [
        ("running", 1), ("success", 3), ("failed", 2), ("failed", 1)
    ]  # fmt: skip


async def test_the_task_variable_lists_tasks_of_the_range_and_live_ones(seeded: Seeded) -> None:
    q = query(HISTORY_UID, "variable task_name")
    got = await run(seeded.reader, q, start=BASE + timedelta(hours=3), end=NOW)
    # app:ok finished in that range, app:bulk too; o'brien only runs; app:fail
    # finished before it (its pending rows are app:ok's).
    assert [r["task_name"] for r in got] == ["app:bulk", "app:ok", QUOTED]
    got = await run(seeded.reader, q, start=NOW - timedelta(days=3), end=NOW)
    assert [r["task_name"] for r in got] == ["app:bulk", "app:fail", "app:ok", QUOTED]


async def test_the_execution_dashboard_shows_one_attempt_and_its_task_id(seeded: Seeded) -> None:
    start, end = NOW - timedelta(days=7), NOW
    failed = seeded.by_error("TimeoutError: slower")
    panels = {p: query(EXECUTION_UID, p) for p in
              ("Attempt", "Traceback", "Params", "Attempts of this task id")}  # fmt: skip

    async def show(panel: str, attempt: str) -> list[asyncpg.Record]:
        return await run(seeded.reader, panels[panel], start=start, end=end, attempt=attempt)

    [one] = await show("Attempt", str(failed.id))
    assert (one["id"], one["task_name"], one["status"], one["attempt"], one["task_id"]) == (
        failed.id, QUOTED, "failed", 2, "tid-1"
    )  # fmt: skip
    assert one["error_message"] == "TimeoutError: slower"
    # The links' time range: an hour either side of the attempt, in epoch ms.
    assert one["range_from"] == int((failed.created - timedelta(hours=1)).timestamp() * 1000)
    assert one["range_to"] == int((failed.updated + timedelta(hours=1)).timestamp() * 1000)
    [traceback] = await show("Traceback", str(failed.id))
    assert traceback["traceback"] == failed.traceback
    [params] = await show("Params", str(failed.id))
    assert json.loads(params["params"]) == failed.params
    assert "\n    " in params["params"]  # pretty-printed
    attempts = await show("Attempts of this task id", str(failed.id))
    assert [(r["attempt"], r["status"]) for r in attempts] == [
        (3, "success"), (2, "failed"), (1, "failed")
    ]  # fmt: skip
    # A task id names its latest attempt: a success, without traceback or params.
    [latest] = await show("Attempt", "tid-1")
    assert (latest["attempt"], latest["status"]) == (3, "success")
    assert await show("Traceback", "tid-1") == []
    assert await show("Params", "tid-1") == []
    assert len(await show("Attempts of this task id", "tid-1")) == 3
    # Empty, unknown or hostile: nothing.
    for attempt in ("", "nope", "0", "x') OR true --", f"{failed.id} OR true"):
        for panel in panels:
            assert await show(panel, attempt) == [], (panel, attempt)
    # An attempt outside the time range is not shown (the partitions it reads).
    outside = await run(seeded.reader, panels["Attempt"], start=NOW - timedelta(hours=1),
                        end=NOW, attempt=str(failed.id))  # fmt: skip
    assert outside == []


async def test_every_data_link_column_is_a_column_of_its_panel(seeded: Seeded) -> None:
    """The ${__data.fields.X} of each panel's links name columns its query returns."""
    from dashboards.links import all_urls
    from dashboards.normalize import normalize
    from dashboards.render import boards

    dashboards = {uid: normalize(b.dashboard) for uid, b in boards().items()}
    attempt = str(seeded.by_error("TimeoutError: slower").id)
    checked = 0
    for item in all_urls(dashboards):
        fields = set(re.findall(r"\$\{__data\.fields\.(\w+)", item.url))
        if not fields:
            continue
        got = await run(seeded.reader, query(item.dashboard, item.where),
                        start=NOW - timedelta(days=7), end=NOW, attempt=attempt)  # fmt: skip
        assert got, item
        assert fields <= set(got[0].keys()), (item, fields)
        checked += 1
    assert checked >= 6
