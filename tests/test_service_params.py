import base64
import json
from datetime import UTC, datetime

import pytest
from starlette.datastructures import QueryParams

from exporter.service.errors import BadRequest
from exporter.service.params import (
    MAX_ROW_ID,
    HistoryQuery,
    MetricsQuery,
    decode_cursor,
    encode_cursor,
    parse_query,
)


def history(qs: str) -> HistoryQuery:
    return parse_query(HistoryQuery, QueryParams(qs))


def error_of(model: type, qs: str) -> str:
    with pytest.raises(BadRequest) as info:
        parse_query(model, QueryParams(qs))
    assert info.value.status_code == 400
    return str(info.value.detail)


def test_defaults() -> None:
    q = history("")
    assert (q.page, q.page_size, q.task_name, q.status, q.cursor) == (None, 50, None, None, None)
    assert parse_query(MetricsQuery, QueryParams("")).time_window == 24


def test_dates_with_and_without_offset() -> None:
    q = history("start_date=2026-01-01T10:00:00&end_date=2026-01-01T13:00:00%2B02:00")
    assert q.start_date == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert q.end_date == datetime(2026, 1, 1, 11, tzinfo=UTC)
    assert history("start_date=2026-01-01").start_date == datetime(2026, 1, 1, tzinfo=UTC)
    assert history("start_date=2026-01-01T00:00:00Z").start_date == datetime(2026, 1, 1, tzinfo=UTC)


def test_empty_value_means_not_given() -> None:
    assert history("task_name=&status=").task_name is None


@pytest.mark.parametrize(
    ("qs", "param", "allowed"),
    [
        ("start_date=invalid", "start_date", "ISO 8601"),
        ("end_date=2026-13-01", "end_date", "ISO 8601"),
        ("status=done", "status", "pending, running, success, failed"),
        ("page=0", "page", "from 1"),
        ("page=abc", "page", "integer"),
        ("page=1.5", "page", "integer"),
        ("page_size=0", "page_size", "from 1 to 200"),
        ("page_size=10000", "page_size", "from 1 to 200"),
        ("task_name=" + "x" * 256, "task_name", "1 to 255"),
        ("task_name=a%00b", "task_name", "task name"),
        ("start_date=1800-01-01", "start_date", "ISO 8601"),
        ("cursor=%%%", "cursor", "next_cursor"),
    ],
)
def test_invalid_values_name_the_parameter(qs: str, param: str, allowed: str) -> None:
    message = error_of(HistoryQuery, qs)
    assert param in message
    assert allowed in message


@pytest.mark.parametrize("value", ["0", "100000", "x"])
def test_time_window_bounds(value: str) -> None:
    assert error_of(MetricsQuery, f"time_window={value}") == (
        f"invalid query parameter 'time_window': must be whole hours, from 1 to 720 (got {value!r})"
    )


def test_end_before_start() -> None:
    message = error_of(HistoryQuery, "start_date=2026-01-02&end_date=2026-01-01")
    assert message == "end_date must be after start_date"


def test_unknown_and_repeated_parameters() -> None:
    assert error_of(HistoryQuery, "foo=1") == (
        "unknown query parameter 'foo'; allowed: "
        "task_name, status, start_date, end_date, page, page_size, cursor, error, param.<key>"
    )
    assert error_of(HistoryQuery, "page=1&page=2") == (
        "query parameter 'page' is given more than once"
    )


def test_page_and_cursor_exclusive() -> None:
    cursor = encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), 5)
    assert error_of(HistoryQuery, f"page=2&cursor={cursor}") == (
        "page and cursor cannot be combined: pass one of them"
    )


def test_cursor_round_trip() -> None:
    stamp = datetime(2026, 1, 1, 3, 4, 5, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(stamp, 99)) == (stamp, 99)
    with pytest.raises(ValueError, match="next_cursor"):
        decode_cursor("bm90IGpzb24")


def raw_cursor(row_id: object, stamp: str = "2026-01-01T00:00:00+00:00") -> str:
    raw = json.dumps([stamp, row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("row_id", [2**63, 10**60, 0, -1, MAX_ROW_ID + 1])
def test_a_cursor_row_id_beyond_bigint_is_a_bad_request(row_id: int) -> None:
    message = error_of(HistoryQuery, f"cursor={raw_cursor(row_id)}")
    assert message == "cursor must be a next_cursor value returned by this API"


def test_the_largest_row_id_is_a_cursor() -> None:
    assert history(f"cursor={raw_cursor(MAX_ROW_ID)}").cursor == raw_cursor(MAX_ROW_ID)
    assert MAX_ROW_ID == 2**63 - 1


@pytest.mark.parametrize(
    ("model", "name"),
    [(HistoryQuery, "page"), (HistoryQuery, "page_size"), (MetricsQuery, "time_window")],
)
@pytest.mark.parametrize("value", [str(2**63), "1" + "0" * 60, "9" * 5000, "-1"])
def test_huge_integers_name_the_parameter(model: type, name: str, value: str) -> None:
    assert f"invalid query parameter '{name}'" in error_of(model, f"{name}={value}")
