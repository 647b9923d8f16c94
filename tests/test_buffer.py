"""RowBuffer, the bounded buffer between the hooks and the writer (the hooks that
fill it: test_hooks)."""

from __future__ import annotations

from exporter.middleware.buffer import (
    DROPPED_KEYS_KEPT,
    TRACEBACK_DROPPED,
    RowBuffer,
    row_bytes,
)
from exporter.rows import (
    COMPLETED_AT,
    CREATED_AT,
    ERROR_MESSAGE,
    ERROR_TRACEBACK,
    PARAMS,
    PENDING,
    STARTED_AT,
    STATUS,
    LogRow,
    advance,
    log_row,
)

MiB = 2**20


def test_start_and_end_in_one_window_are_one_row() -> None:
    buf = RowBuffer(10)
    row = buf.row("t1", 1, "app:task", 100.0)
    assert row is not None
    row[STARTED_AT] = 101.0
    advance(row, "running")
    again = buf.row("t1", 1, "app:task", 100.0)
    assert again is row
    again[COMPLETED_AT] = 102.0
    advance(again, "success")
    batch = buf.take(100)
    assert len(batch) == 1
    assert batch[0][STATUS] == "success"
    assert batch[0][STARTED_AT] == 101.0


def test_status_never_goes_back_and_terminal_is_final() -> None:
    row = RowBuffer(1).row("t", 1, "n", 0.0)
    assert row is not None
    advance(row, "success")
    advance(row, "running")
    advance(row, "failed")
    assert row[STATUS] == "success"


def test_rows_beyond_the_bound_are_dropped_and_counted() -> None:
    buf = RowBuffer(3)
    kept = [buf.row(f"t{i}", 1, "n", 0.0) for i in range(5)]
    assert [r is not None for r in kept] == [True, True, True, False, False]
    assert buf.dropped == 2
    # Updates to rows already held are always accepted.
    assert buf.row("t0", 1, "n", 0.0) is kept[0]
    assert buf.dropped == 2


def test_in_flight_rows_count_against_the_bound() -> None:
    buf = RowBuffer(2)
    buf.row("a", 1, "n", 0.0)
    buf.row("b", 1, "n", 0.0)
    batch = buf.take(10)
    assert len(buf) == 2
    assert buf.row("c", 1, "n", 0.0) is None
    buf.settle(batch, written=True)
    assert len(buf) == 0
    assert buf.row("c", 1, "n", 0.0) is not None


def test_a_failed_batch_goes_back_merged_with_newer_updates() -> None:
    buf = RowBuffer(10)
    row = buf.row("t", 1, "n", 50.0)
    assert row is not None
    advance(row, "running")
    row[STARTED_AT] = 51.0
    batch = buf.take(10)
    # Meanwhile the task finished: a new buffered row for the same attempt.
    newer = buf.row("t", 1, "n", 60.0)
    assert newer is not None
    newer[COMPLETED_AT] = 70.0
    advance(newer, "success")
    buf.settle(batch, written=False)
    assert len(buf.rows) == 1
    (merged,) = buf.rows.values()
    assert merged[STATUS] == "success"
    assert merged[STARTED_AT] == 51.0
    assert merged[COMPLETED_AT] == 70.0
    assert merged[CREATED_AT] == 50.0


def test_dropped_attempts_are_remembered_up_to_a_bound() -> None:
    buf = RowBuffer(max_rows=1)
    buf.admit("held", log_row("held", 1, "t", PENDING, created_at=0.0))
    buf.admit("first", log_row("first", 1, "t", PENDING, created_at=0.0))
    buf.admit(
        "first", log_row("first", 1, "t", PENDING, created_at=0.0)
    )  # its end: the same lost row
    assert buf.dropped == 1
    for i in range(DROPPED_KEYS_KEPT):
        buf.admit(f"other-{i}", log_row(f"other-{i}", 1, "t", PENDING, created_at=0.0))
    assert buf.dropped == 1 + DROPPED_KEYS_KEPT
    # "first" was the oldest remembered and has been forgotten: it counts again.
    buf.admit("first", log_row("first", 1, "t", PENDING, created_at=0.0))
    assert buf.dropped == 2 + DROPPED_KEYS_KEPT
    buf.admit(f"other-{DROPPED_KEYS_KEPT - 1}", log_row("x", 1, "t", PENDING, created_at=0.0))
    assert buf.dropped == 2 + DROPPED_KEYS_KEPT


def failed_row(task_id: str, traceback_chars: int = 30_000) -> LogRow:
    row = log_row(task_id, 1, "n", PENDING, created_at=0.0)
    row[STATUS] = "failed"
    row[PARAMS] = '{"args":[1],"kwargs":{}}'
    row[ERROR_MESSAGE] = "ValueError: " + "m" * 1_000
    row[ERROR_TRACEBACK] = "t" * traceback_chars
    return row


def held_bytes(buf: RowBuffer) -> int:
    return sum(map(row_bytes, buf.rows.values()))


def test_a_row_is_estimated_by_its_texts() -> None:
    small = log_row("t", 1, "n", PENDING, created_at=0.0)
    big = failed_row("t")
    assert row_bytes(big) - row_bytes(small) == 24 + 1_012 + 30_000


def test_failures_are_bounded_in_bytes_and_lose_tracebacks_before_rows() -> None:
    buf = RowBuffer(100_000, max_bytes=MiB)
    for i in range(600):
        assert buf.admit(f"t{i}", failed_row(f"t{i}"))
        assert held_bytes(buf) <= buf.bytes <= MiB
    assert buf.dropped == 0
    # The oldest failures lost their tracebacks, the newest keep them.
    assert buf.rows["t0"][ERROR_TRACEBACK] == TRACEBACK_DROPPED
    assert buf.rows["t0"][ERROR_MESSAGE].startswith("ValueError: ")
    assert buf.rows["t599"][ERROR_TRACEBACK] == "t" * 30_000
    with_traceback = sum(r[ERROR_TRACEBACK] != TRACEBACK_DROPPED for r in buf.rows.values())
    assert 0 < with_traceback < 40
    assert buf.tracebacks_dropped == 600 - with_traceback
    # Only when no traceback is left are rows dropped, and counted.
    for i in range(600, 2_000):
        buf.admit(f"t{i}", failed_row(f"t{i}"))
        assert held_bytes(buf) <= MiB
    assert buf.dropped > 0
    assert len(buf.rows) + buf.dropped == 2_000
    assert all(r[ERROR_TRACEBACK] == TRACEBACK_DROPPED for r in buf.rows.values())


def test_small_rows_still_fill_the_row_bound() -> None:
    """The byte bound costs nothing to rows that are small: 100,000 successes fit."""
    buf = RowBuffer(100_000)
    for i in range(100_001):
        row = log_row(f"t{i}", 1, "n", PENDING, created_at=0.0)
        row[STATUS] = "success"
        buf.admit(f"t{i}", row)
    assert len(buf.rows) == 100_000
    assert buf.dropped == 1
    assert buf.tracebacks_dropped == 0


def test_rows_in_flight_count_in_bytes_until_written() -> None:
    buf = RowBuffer(100_000, max_bytes=MiB)
    for i in range(30):
        buf.admit(f"a{i}", failed_row(f"a{i}"))
    batch = buf.take(100)
    assert buf.rows == {}
    for i in range(30):
        buf.admit(f"b{i}", failed_row(f"b{i}"))
    assert held_bytes(buf) + sum(map(row_bytes, batch)) <= MiB
    assert buf.tracebacks_dropped > 0
    stripped = buf.tracebacks_dropped
    buf.settle(batch, written=True)
    for i in range(20):
        buf.admit(f"c{i}", failed_row(f"c{i}"))
    assert buf.tracebacks_dropped == stripped  # room again once written
    assert buf.rows["c19"][ERROR_TRACEBACK] == "t" * 30_000


def test_a_running_row_that_fails_in_place_is_measured_again() -> None:
    """A RUNNING row held while its task runs gets its traceback in place when the
    task fails (MonitoringMiddleware.post_execute): it is measured again."""
    buf = RowBuffer(100_000, max_bytes=MiB)
    running = [log_row(f"r{i}", 1, "n", PENDING, created_at=0.0) for i in range(40)]
    for row in running:
        row[STATUS] = "running"
        buf.admit(row[0], row)
    buf.measure()
    before = buf.bytes
    for row in running[:34]:
        row[STATUS], row[ERROR_TRACEBACK] = "failed", "t" * 30_000
    buf.measure()
    assert buf.bytes == before + 34 * 30_000
    buf.admit("more", failed_row("more"))  # needs room: the oldest tracebacks go
    assert held_bytes(buf) <= buf.bytes <= MiB
    assert running[0][ERROR_TRACEBACK] == TRACEBACK_DROPPED


def test_a_batch_put_back_is_measured_with_what_merged_into_it() -> None:
    buf = RowBuffer(100_000, max_bytes=MiB)
    for i in range(40):
        buf.admit(f"t{i}", failed_row(f"t{i}", 10_000))
    batch = buf.take(10)
    newer = log_row("t0", 1, "n", PENDING, created_at=0.0)
    newer[STATUS] = "failed"
    buf.admit("t0", newer)
    buf.settle(batch, written=False)
    assert len(buf.rows) == 40
    assert buf.in_flight == 0
    buf.measure()
    assert buf.bytes == held_bytes(buf)
