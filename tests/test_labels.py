"""What the sender tells the worker through the labels."""

from __future__ import annotations

import pytest

from exporter.middleware.labels import attempt_key, sent_at


def test_send_time_is_read_as_microseconds_whatever_the_broker_made_of_it() -> None:
    assert sent_at(1_764_000_000_123_456) == pytest.approx(1_764_000_000.123456)
    # Brokers that carry labels as text (taskiq's labels_types) give a string back.
    assert sent_at("1764000000123456") == pytest.approx(1_764_000_000.123456)


@pytest.mark.parametrize("odd", [None, "", "soon", 1.5e9, True, [1], {"t": 1}])
def test_an_odd_send_time_is_no_send_time(odd: object) -> None:
    assert sent_at(odd) is None


def test_first_attempt_is_keyed_by_the_task_id_and_retries_by_id_and_attempt() -> None:
    assert attempt_key("t1", None) == (1, "t1")
    assert attempt_key("t1", 0) == (1, "t1")
    assert attempt_key("t1", 2) == (3, ("t1", 3))
    assert attempt_key("t1", "2") == (3, ("t1", 3))
    assert attempt_key("t1", "garbage") == (1, "t1")
