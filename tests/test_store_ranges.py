import itertools
from datetime import UTC, datetime, timedelta

import pytest

from exporter.store.ranges import Span, split

T = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def covered(spans: list[Span]) -> list[tuple[datetime | None, datetime | None]]:
    return [(s.lo, s.hi) for s in reversed(spans)]


def test_open_range_is_one_hours_span() -> None:
    assert split(None, None) == [Span("hours", None, None)]


def test_within_one_minute_reads_rows() -> None:
    lo = T + timedelta(seconds=5)
    assert split(lo, lo + timedelta(seconds=20)) == [Span("rows", lo, lo + timedelta(seconds=20))]


def test_full_decomposition_newest_first() -> None:
    lo = T + timedelta(minutes=10, seconds=30)
    hi = T + timedelta(hours=5, minutes=20, seconds=15)
    spans = split(lo, hi)
    assert [s.kind for s in spans] == ["rows", "minutes", "hours", "minutes", "rows"]
    assert spans[0] == Span("rows", T + timedelta(hours=5, minutes=20), hi)
    assert spans[1] == Span("minutes", T + timedelta(hours=5), T + timedelta(hours=5, minutes=20))
    assert spans[2] == Span("hours", T + timedelta(hours=1), T + timedelta(hours=5))
    assert spans[3] == Span("minutes", T + timedelta(minutes=11), T + timedelta(hours=1))
    assert spans[4] == Span("rows", lo, T + timedelta(minutes=11))


def test_no_full_hour_uses_minutes_only() -> None:
    lo = T + timedelta(minutes=10)
    hi = T + timedelta(minutes=50)
    assert split(lo, hi) == [Span("minutes", lo, hi)]


def test_open_bounds() -> None:
    lo = T + timedelta(minutes=10, seconds=1)
    spans = split(lo, None)
    assert [s.kind for s in spans] == ["hours", "minutes", "rows"]
    assert spans[0] == Span("hours", T + timedelta(hours=1), None)
    spans = split(None, lo)
    assert [s.kind for s in spans] == ["rows", "minutes", "hours"]
    assert spans[2] == Span("hours", None, T)


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 61, 3599, 3600, 3601, 7300, 86400 * 3 + 17])
@pytest.mark.parametrize("offset", [0, 1, 59, 61, 3599, 3601])
def test_pieces_cover_the_range_exactly(seconds: int, offset: int) -> None:
    lo = T + timedelta(seconds=offset)
    hi = lo + timedelta(seconds=seconds)
    spans = split(lo, hi)
    if seconds == 0:
        assert spans == []
        return
    edges = covered(spans)
    assert edges[0][0] == lo
    assert edges[-1][1] == hi
    for (_, a_hi), (b_lo, _) in itertools.pairwise(edges):
        assert a_hi == b_lo
    for span in spans:
        assert span.lo is not None
        assert span.hi is not None
        assert span.lo < span.hi
        if span.kind != "rows":
            assert span.lo.second == 0
            assert span.hi.second == 0
        if span.kind == "hours":
            assert span.lo.minute == 0
            assert span.hi.minute == 0
