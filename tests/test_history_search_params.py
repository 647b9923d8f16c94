"""The search's query parameters and values, without a database."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from exporter.service.errors import BadRequest
from exporter.service.params import HistoryQuery, parse_query
from exporter.store.queries import like_escaped, param_candidates


def history(qs: str) -> HistoryQuery:
    return parse_query(HistoryQuery, QueryParams(qs))


def test_both_spellings_of_a_param_filter() -> None:
    q = history("param.user_id=42&param[order_id]=ord-1&param.0=x&error=timed%20out")
    assert q.param == {"user_id": "42", "order_id": "ord-1", "0": "x"}
    assert q.error == "timed out"
    assert q.searching
    assert not history("param.user_id=&task_name=a").searching


def test_a_search_pages_up_to_its_window() -> None:
    assert history("error=abc&page=200&page_size=50").page == 200
    assert history("page=201&page_size=50").page == 201  # no search: no window
    with pytest.raises(BadRequest, match="page x page_size must be at most 10000"):
        history("param.a=1&page=201&page_size=50")


@pytest.mark.parametrize(
    ("value", "candidates"),
    [
        ("42", ("42", 42)),
        ("-7", ("-7", -7)),
        ("1.5", ("1.5", 1.5)),
        ("1e3", ("1e3", 1000.0)),
        ("0.0", ("0.0", 0.0)),
        ("true", ("true", True)),
        ("false", ("false", False)),
        ("null", ("null", None)),
        ("042", ("042",)),
        ("4 2", ("4 2",)),
        ("1e999", ("1e999",)),
        ("1e-999", ("1e-999",)),
        (str(2**63), (str(2**63),)),
        ("NaN", ("NaN",)),
        ("True", ("True",)),
    ],
)
def test_what_a_value_may_be_stored_as(value: str, candidates: tuple[object, ...]) -> None:
    assert param_candidates(value) == candidates


def test_like_escaping() -> None:
    assert like_escaped(r"50%_a\b") == r"50\%\_a\\b"
