"""The history's search (error=, param.<key>=) on both stores, its bounds, its
indexes on PostgreSQL, and that redacted values are never found."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import ClauseElement, Executable, select, text
from sqlalchemy.ext.compiler import compiles
from starlette.datastructures import QueryParams

from exporter.cli import main, search_index
from exporter.cli.options import CliError
from exporter.middleware.sanitize import ParamsEncoder, describe_exception
from exporter.service.history import filter_of
from exporter.service.params import SEARCH_WINDOW, HistoryQuery, parse_query
from exporter.settings import DEFAULT_SECRET_KEYS
from exporter.store import partitions
from exporter.store.engine import make_engine
from exporter.store.migrate import upgrade
from exporter.store.pg_admin import asyncpg_dsn
from exporter.store.queries import LOG
from tests.helpers.rows import insert_logs, stored_row
from tests.helpers.serving import running_service

pytestmark = pytest.mark.integration
API = "/api/v1/monitoring"
NOW = datetime.now(UTC).replace(microsecond=0)


def failed(message: str, minutes: int, **extra: Any) -> dict[str, object]:
    return stored_row(
        status="failed",
        created_at=NOW - timedelta(minutes=minutes),
        error_message=message,
        **extra,
    )


def with_params(minutes: int, *args: Any, status: str = "success", **kwargs: Any) -> dict[str, Any]:
    return stored_row(
        status=status,
        created_at=NOW - timedelta(minutes=minutes),
        params={"args": list(args), "kwargs": kwargs},
        task_name=f"app:{status}",
    )


async def search(client: Any, **params: Any) -> dict[str, Any]:
    response = await client.get(f"{API}/history", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def messages(body: dict[str, Any]) -> list[str]:
    return [item["error_message"] for item in body["items"]]


async def test_error_is_a_literal_case_insensitive_substring(store_url: str) -> None:
    rows = [
        failed("ValueError: 50% done_x", 1),
        failed("ValueError: 50X doneYx", 2),
        failed(r"OSError: C:\tmp\a not found", 3),
        failed("TimeoutError: GET /orders/ord-17 timed out", 4),
        # A message on a row that did not fail (none is written so) is not searched.
        stored_row(status="success", created_at=NOW, error_message="ValueError: 50% done_x"),
    ]
    await insert_logs(store_url, rows)
    async with running_service(store_url) as (_app, client):
        assert messages(await search(client, error="50%")) == ["ValueError: 50% done_x"]
        assert messages(await search(client, error="e_x")) == ["ValueError: 50% done_x"]
        assert messages(await search(client, error=r"C:\tmp")) == [r"OSError: C:\tmp\a not found"]
        body = await search(client, error="valueERROR")
        assert len(body["items"]) == 2
        assert (body["total_count"], body["total_count_exact"]) == (2, True)
        assert (await search(client, error="ord-17", status="failed"))["total_count"] == 1
        assert (await search(client, error="ord-17", status="success"))["total_count"] == 0
        start = (NOW - timedelta(minutes=3, seconds=30)).isoformat()
        body = await search(client, error="Error", start_date=start)
        assert (body["total_count"], len(body["items"])) == (3, 3)
        assert (await search(client, error="ord-18"))["items"] == []


async def test_param_matches_a_keyword_or_positional_argument(store_url: str) -> None:
    rows = [
        with_params(1, 7, "x", user_id=42, flag=True),
        with_params(2, 42, user_id="42", note=None),
        with_params(3, "42", 7, user_id=420, ratio=1.5),
        with_params(4, status="running", user_id=42, order_id="ord-9"),
        with_params(5, status="failed", user_id=42, order_id="ord-10"),
    ]
    await insert_logs(store_url, rows)
    async with running_service(store_url) as (_app, client):

        async def minutes(**params: Any) -> list[int]:
            body = await search(client, **params)
            assert body["total_count"] == len(body["items"])
            return [
                round((NOW - datetime.fromisoformat(i["created_at"])).total_seconds() / 60)
                for i in body["items"]
            ]

        assert await minutes(**{"param.user_id": "42"}) == [1, 2, 4, 5]
        assert await minutes(**{"param[user_id]": "42"}) == [1, 2, 4, 5]
        assert await minutes(**{"param.0": "42"}) == [2, 3]
        assert await minutes(**{"param.1": "7"}) == [3]
        assert await minutes(**{"param.1": "x"}) == [1]
        assert await minutes(**{"param.flag": "true"}) == [1]
        assert await minutes(**{"param.flag": "false"}) == []
        assert await minutes(**{"param.note": "null"}) == [2]
        assert await minutes(**{"param.ratio": "1.5"}) == [3]
        assert await minutes(**{"param.ratio": "1.50"}) == [3]
        assert await minutes(**{"param.order_id": "ord-9"}) == [4]
        assert await minutes(**{"param.user_id": "42", "param.order_id": "ord-10"}) == [5]
        assert await minutes(**{"param.user_id": "42", "status": "running"}) == [4]
        assert await minutes(**{"param.user_id": "42", "task_name": "app:failed"}) == [5]
        end = (NOW - timedelta(minutes=1, seconds=30)).isoformat()
        assert await minutes(**{"param.user_id": "42", "end_date": end}) == [2, 4, 5]
        assert await minutes(**{"param.missing": "42"}) == []
        assert await minutes(**{"param.user_id": ""}) == [1, 2, 3, 4, 5]  # empty: not given


async def test_redacted_values_are_never_found(store_url: str) -> None:
    """The middleware's own redaction: a password argument and a DSN's password, in
    the params and in the error message; the marker left in their place matches
    nothing either."""
    encoder = ParamsEncoder(secret_keys=DEFAULT_SECRET_KEYS, max_bytes=16_384)
    dsn = "postgresql://app:s3cretpw@db.internal/prod"
    kwargs = {"user_id": 7, "password": "hunter2-secret", "dsn": dsn, "target": dsn}
    params = json.loads(encoder.encode((), kwargs, "app:login"))
    assert params["kwargs"]["password"] == "***"
    assert params["kwargs"]["dsn"] == "***"
    assert params["kwargs"]["target"] == "postgresql://app:***@db.internal/prod"
    exc = ConnectionError(f"cannot connect to {dsn} with password hunter2-secret")
    message, _ = describe_exception(
        exc,
        max_message_bytes=2048,
        max_traceback_bytes=2048,
        redact=encoder.error_redactor((), kwargs, "app:login"),
    )
    assert "s3cretpw" not in message
    assert "hunter2" not in message
    assert "***" in message
    row = stored_row(
        status="failed", created_at=NOW, params=params, error_message=message, task_name="app:login"
    )
    await insert_logs(store_url, [row])
    async with running_service(store_url) as (_app, client):
        # The row is there to be found by what is not secret.
        assert (await search(client, **{"param.user_id": "7"}))["total_count"] == 1
        assert (await search(client, error="cannot connect"))["total_count"] == 1
        for query in (
            {"param.password": "hunter2-secret"},
            {"param.password": "***"},
            {"param.dsn": dsn},
            {"param.dsn": "***"},
            {"param.target": dsn},
            {"param.target": "postgresql://app:***@db.internal/prod"},
            {"param.user_id": "7", "param.password": "***"},
            {"error": "s3cretpw"},
            {"error": "hunter2"},
            {"error": "***"},
            {"error": "app:***@db"},
            {"error": "cannot connect", "param.password": "***"},
        ):
            body = await search(client, **query)
            assert (body["total_count"], body["items"]) == (0, []), query


async def test_search_pages_and_cursor_walk_agree(store_url: str) -> None:
    rows = [
        failed(f"KeyError: 'user_{i % 3}'", i, params={"args": [], "kwargs": {"k": i % 2}})
        for i in range(1, 121)
    ]
    await insert_logs(store_url, rows)
    wanted = [
        r["task_id"]
        for i, r in enumerate(rows, start=1)
        if i % 2 == 1 and "user_1" in str(r["error_message"])
    ]
    assert len(wanted) == 20
    query = {"param.k": "1", "error": "user_1", "page_size": 7}
    async with running_service(store_url) as (_app, client):
        by_page: list[str] = []
        for page in range(1, 10):
            body = await search(client, **query, page=page)
            assert body["total_count"] == len(wanted)
            assert body["total_pages"] == -(-len(wanted) // 7)
            by_page += [i["task_id"] for i in body["items"]]
        by_cursor: list[str] = []
        body = await search(client, **query)
        while True:
            by_cursor += [i["task_id"] for i in body["items"]]
            if body["next_cursor"] is None:
                break
            body = await search(client, **query, cursor=body["next_cursor"])
            assert body["page"] is None
            assert body["total_count"] == len(wanted)
    assert by_page == by_cursor == wanted


async def test_a_search_counts_up_to_its_window(pg_store: str) -> None:
    rows = [failed("TimeoutError: slow", i % 600, params=None) for i in range(SEARCH_WINDOW + 5)]
    await insert_logs(pg_store, rows)
    async with running_service(pg_store) as (_app, client):
        body = await search(client, error="slow", page_size=200)
        assert (body["total_count"], body["total_count_exact"]) == (SEARCH_WINDOW, False)
        assert body["total_pages"] == SEARCH_WINDOW // 200
        assert body["next_cursor"] is not None
        last = await search(client, error="slow", page_size=200, page=SEARCH_WINDOW // 200)
        assert len(last["items"]) == 200
        assert last["next_cursor"] is not None
        # Beyond the window by cursor: the five left.
        tail = await search(client, error="slow", page_size=200, cursor=last["next_cursor"])
        assert (len(tail["items"]), tail["next_cursor"]) == (5, None)
        plain = await search(client, status="failed", page_size=1)
        assert (plain["total_count"], plain["total_count_exact"]) == (SEARCH_WINDOW + 5, True)


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({"error": "ab"}, ["'error'", "3 to 200 characters"]),
        ({"error": "x" * 201}, ["'error'", "3 to 200 characters"]),
        ({"error": "ab\x00c"}, ["'error'", "3 to 200 characters"]),
        ({"param.user_id": "x" * 201}, ["'param.user_id'", "1 to 200 characters"]),
        ({"param.user_id": "a\x00"}, ["'param.user_id'", "1 to 200 characters"]),
        ({"param.user-id": "1"}, ["'param.user-id'", "Python identifier", "0 to 99"]),
        ({"param.": "1"}, ["'param.'", "Python identifier"]),
        ({"param[]": "1"}, ["'param[]'", "Python identifier"]),
        ({"param.100": "1"}, ["'param.100'", "0 to 99"]),
        ({"param.a.b": "1"}, ["'param.a.b'", "Python identifier"]),
        ({"param.x" + "y" * 100: "1"}, ["'param.xyyy", "1 to 100 characters"]),
        ({f"param.k{i}": "1" for i in range(6)}, ["at most 5 param.<key> filters"]),
        ({"param": "1"}, ["unknown query parameter 'param'", "param.<key>"]),
        (
            {"error": "abc", "page": "201"},
            ["page x page_size must be at most 10000", "next_cursor"],
        ),
    ],
)
async def test_bad_search_input_is_a_400_naming_it(
    sqlite_store: str, query: dict[str, str], names: list[str]
) -> None:
    async with running_service(sqlite_store) as (_app, client):
        response = await client.get(f"{API}/history", params=query)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        for name in names:
            assert name in error, error


async def test_a_key_given_twice_is_a_400(sqlite_store: str) -> None:
    async with running_service(sqlite_store) as (_app, client):
        for qs in ("param.a=1&param.a=2", "param.a=1&param[a]=2", "error=abc&error=abd"):
            response = await client.get(f"{API}/history?{qs}")
            assert response.status_code == 400, qs
            assert "more than once" in response.json()["error"]


class Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN " + str(compiler.process(element.statement, **kw))


@pytest.mark.parametrize(
    ("qs", "index"),
    [
        ("error=user_1999", "error_trgm"),
        ("param.user_id=42", "params"),
        ("param.0=42", "params"),
    ],
)
async def test_postgresql_answers_a_search_from_its_index(
    pg_store: str, qs: str, index: str
) -> None:
    rows = [
        failed(f"KeyError: 'user_{i}'", i % 600, params={"args": [i], "kwargs": {"user_id": i}})
        for i in range(2_000)
    ]
    rows += [with_params(i % 600, i) for i in range(20_000)]
    await insert_logs(pg_store, rows)
    engine = make_engine(pg_store)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await search_index.create(conn, search_index.INDEXES["params"])
            await conn.execute(text("ANALYZE task_execution_logs"))
            wanted = {
                str(name)
                for suffix in index.split("|")
                for name in await conn.scalars(
                    text(
                        "SELECT relid::regclass::text"
                        " FROM pg_partition_tree(to_regclass(CAST(:i AS text))) WHERE isleaf"
                    ),
                    {"i": search_index.INDEXES["error" if suffix == "error_trgm" else suffix].name},
                )
            }
            # As on a large log, where the planner prefers the search's index.
            await conn.execute(text("SET enable_seqscan = off"))
            await conn.execute(text("SET enable_indexscan = off"))
            where = filter_of(parse_query(HistoryQuery, QueryParams(qs))).where()
            plan = "\n".join(
                str(r[0]) for r in await conn.execute(Explain(select(LOG.id).where(where)))
            )
        # The partition with the rows (the others are empty: any index does).
        used = set(re.findall(r"Bitmap Index Scan on (\S+)", plan))
        assert used & wanted, plan
    finally:
        await engine.dispose()


async def test_partitions_made_later_get_the_search_indexes(pg_store: str) -> None:
    engine = make_engine(pg_store)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await search_index.create(conn, search_index.INDEXES["params"])
            assert "present," in await search_index.describe(conn, search_index.INDEXES["params"])
        made = await partitions.ensure(engine, interval_hours=24, ahead_hours=24 * 6, keep_days=30)
        assert made
        async with engine.connect() as conn:
            for index in search_index.INDEXES.values():
                for partition in made:
                    found = await conn.scalar(
                        text(
                            "SELECT count(*) FROM pg_inherits i JOIN pg_index x"
                            " ON x.indexrelid = i.inhrelid"
                            " WHERE i.inhparent = to_regclass(:i)"
                            " AND x.indrelid = to_regclass(:p) AND x.indisvalid"
                        ),
                        {"i": index.name, "p": partition.name},
                    )
                    assert found == 1, (index.name, partition.name)
    finally:
        await engine.dispose()


async def test_a_role_that_may_not_create_pg_trgm_upgrades_without_it(pg_url: str) -> None:
    role = "texp_no_create_" + pg_url.rsplit("_", 1)[-1][:8]
    admin = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
        assert not await admin.fetchval(
            "SELECT has_database_privilege($1, current_database(), 'CREATE')", role
        )
        url = pg_url.replace("postgres@", f"{role}@", 1)
        await upgrade(url)
        assert (
            await admin.fetchval("SELECT to_regclass('ix_task_execution_logs_error_trgm')") is None
        )
        await insert_logs(url, [failed("TimeoutError: GET /orders/ord-17 timed out", 1)])
        async with running_service(url) as (_app, client):
            assert (await search(client, error="ORD-17"))["total_count"] == 1
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                with pytest.raises(CliError, match="CREATE EXTENSION pg_trgm"):
                    await search_index.create(conn, search_index.INDEXES["error"])
        finally:
            await engine.dispose()
    finally:
        await admin.execute(f"DROP OWNED BY {role} CASCADE")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_db_upgrade_builds_the_error_index_before_migrating(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a partitioned log with rows, `db upgrade` builds 0005's index concurrently
    first; the migration then finds it made, valid on every partition."""
    await upgrade(pg_url, "0004")
    engine = make_engine(pg_url)
    try:
        await partitions.ensure(engine, interval_hours=24, ahead_hours=48, keep_days=30)
    finally:
        await engine.dispose()
    admin = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:  # the columns of 0004
        await admin.execute(
            "INSERT INTO task_execution_logs (task_name, status, task_id, error_message,"
            " created_at, updated_at) VALUES ('app:t', 'failed', 't1', 'TimeoutError: slow',"
            " now(), now())"
        )
    finally:
        await admin.close()
    assert await asyncio.to_thread(main, ["db", "upgrade", "--database-url", pg_url]) == 0
    assert "built the error search's index on the existing rows" in capsys.readouterr().out
    admin = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        valid = await admin.fetch(
            "SELECT x.indisvalid FROM pg_partition_tree('ix_task_execution_logs_error_trgm') t"
            " JOIN pg_index x ON x.indexrelid = t.relid"
        )
        partitions_now = await admin.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'task_execution_logs'::regclass"
        )
    finally:
        await admin.close()
    assert [v for (v,) in valid] == [True] * (partitions_now + 1)


def test_search_index_is_for_postgresql(
    sqlite_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "search-index", "params", "--database-url", sqlite_store]) == 1
    assert "search indexes are for PostgreSQL" in capsys.readouterr().err


async def test_search_index_command_creates_and_drops(
    pg_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for flags, state in (([], "absent"), (["--create"], "present,"), (["--drop"], "absent")):
        argv = ["db", "search-index", "params", *flags, "--database-url", pg_store]
        assert await asyncio.to_thread(main, argv) == 0
        out = capsys.readouterr().out
        assert f"ix_task_execution_logs_params: {state}" in out, out
