"""Cutting a time range into the pieces the store can count cheaply.

A range ``[lo, hi)`` of ``created_at`` becomes: partial minutes at both ends (counted
from the rows themselves, through an index), whole minutes up to the first and from
the last full hour (minute rollups), and whole hours in between (hourly rollups).
A missing bound is open: the hours piece then has no lower or upper limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)

Kind = Literal["rows", "minutes", "hours"]


@dataclass(frozen=True, slots=True)
class Span:
    """``[lo, hi)`` read from ``kind``; None is an open end."""

    kind: Kind
    lo: datetime | None
    hi: datetime | None

    def bucket_of(self, at: datetime) -> datetime | None:
        """The bucket ``at`` falls in, at this span's granularity (None for rows)."""
        if self.kind == "minutes":
            return floor_minute(at)
        if self.kind == "hours":
            return floor_hour(at)
        return None

    @property
    def step(self) -> timedelta:
        """The width of one bucket (rollup kinds only)."""
        return HOUR if self.kind == "hours" else MINUTE

    def contains(self, at: datetime) -> bool:
        return (self.lo is None or at >= self.lo) and (self.hi is None or at < self.hi)


def floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def ceil_minute(at: datetime) -> datetime:
    down = floor_minute(at)
    return down if down == at else down + MINUTE


def floor_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def ceil_hour(at: datetime) -> datetime:
    down = floor_hour(at)
    return down if down == at else down + HOUR


def _aligned(lo: datetime | None, hi: datetime | None) -> list[Span]:
    """Pieces of a minute-aligned range (ascending)."""
    if lo is not None and hi is not None:
        if lo >= hi:
            return []
        if ceil_hour(lo) >= floor_hour(hi):
            return [Span("minutes", lo, hi)]
    spans: list[Span] = []
    lo_hour = ceil_hour(lo) if lo is not None else None
    hi_hour = floor_hour(hi) if hi is not None else None
    if lo is not None and lo_hour is not None and lo_hour > lo:
        spans.append(Span("minutes", lo, lo_hour))
    spans.append(Span("hours", lo_hour, hi_hour))
    if hi is not None and hi_hour is not None and hi > hi_hour:
        spans.append(Span("minutes", hi_hour, hi))
    return spans


def split(lo: datetime | None, hi: datetime | None) -> list[Span]:
    """``[lo, hi)`` as countable pieces, newest first; they cover it exactly once."""
    if lo is not None and hi is not None:
        if lo >= hi:
            return []
        if ceil_minute(lo) >= floor_minute(hi):
            return [Span("rows", lo, hi)]
    lo_min = ceil_minute(lo) if lo is not None else None
    hi_min = floor_minute(hi) if hi is not None else None
    spans: list[Span] = []
    if lo is not None and lo_min is not None and lo_min > lo:
        spans.append(Span("rows", lo, lo_min))
    spans.extend(_aligned(lo_min, hi_min))
    if hi is not None and hi_min is not None and hi > hi_min:
        spans.append(Span("rows", hi_min, hi))
    spans.reverse()
    return spans
