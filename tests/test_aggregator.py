"""Metric tallies applied in bulk equal what per-call updates would show."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from exporter.metrics.aggregator import Aggregator
from exporter.metrics.instruments import Instruments
from exporter.metrics.prometheus_compat import CompatReport
from exporter.settings import DEFAULT_DURATION_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS

# As check_compat reports a prometheus_client it does not support.
REFUSED = CompatReport("0.0.0", ("refused by the test",))


def make(compat: CompatReport | None = None) -> tuple[CollectorRegistry, Aggregator]:
    registry = CollectorRegistry()
    inst = Instruments(
        registry,
        duration_buckets=DEFAULT_DURATION_BUCKETS,
        queue_wait_buckets=DEFAULT_QUEUE_WAIT_BUCKETS,
    )
    return registry, Aggregator(inst, compat=compat)


def test_every_series_of_a_task_exists_at_zero_from_first_sight() -> None:
    registry, agg = make()
    agg.task("app:new")
    labels = {"task_name": "app:new"}
    assert registry.get_sample_value("taskiq_tasks_sent_total", labels) == 0
    assert registry.get_sample_value("taskiq_tasks_started_total", labels) == 0
    assert registry.get_sample_value("taskiq_task_retries_total", labels) == 0
    assert registry.get_sample_value("taskiq_tasks_in_progress", labels) == 0
    for status in ("success", "failed"):
        both = {**labels, "status": status}
        assert registry.get_sample_value("taskiq_tasks_completed_total", both) == 0
        assert registry.get_sample_value("taskiq_task_duration_seconds_count", both) == 0
    assert registry.get_sample_value("taskiq_task_queue_wait_seconds_count", labels) == 0


@pytest.mark.parametrize("compat", [None, REFUSED], ids=["bulk", "public-api"])
@pytest.mark.parametrize("way", ["observe", "pending"])
def test_bulk_histogram_equals_observe_one_by_one(way: str, compat: CompatReport | None) -> None:
    """Tallied one by one, or appended raw by the hooks and bucketed at apply(); added
    to the child's buckets at once, or (a prometheus_client the compat check refuses)
    observed value by value."""
    values = [0.0, 0.004, 0.005, 0.0051, 0.3, 2.5, 7.0, 599.0, 601.0, 10_000.0]
    registry, agg = make(compat)
    tally = agg.task("app:t")
    assert (tally.duration_success.adder is None) == (compat is REFUSED)
    for v in values:
        if way == "observe":
            tally.duration["success"].observe(v)
        else:
            tally.ok_durations.append(v)
    agg.apply()
    reference_registry = CollectorRegistry()
    reference = Histogram("ref", "", buckets=DEFAULT_DURATION_BUCKETS, registry=reference_registry)
    for v in values:
        reference.observe(v)
    labels = {"task_name": "app:t", "status": "success"}
    for bound in [*(str(b) for b in DEFAULT_DURATION_BUCKETS), "+Inf"]:
        expected = reference_registry.get_sample_value("ref_bucket", {"le": bound})
        got = registry.get_sample_value(
            "taskiq_task_duration_seconds_bucket", {**labels, "le": bound}
        )
        assert got == expected, bound
    assert registry.get_sample_value("taskiq_task_duration_seconds_sum", labels) == sum(values)


def test_apply_adds_deltas_and_sets_in_progress() -> None:
    registry, agg = make()
    tally = agg.task("app:t")
    tally.started += 3
    tally.success += 2
    tally.in_progress = 1
    agg.apply()
    tally.started += 1
    tally.in_progress = 0
    agg.apply()
    agg.apply()
    labels = {"task_name": "app:t"}
    assert registry.get_sample_value("taskiq_tasks_started_total", labels) == 4
    assert (
        registry.get_sample_value("taskiq_tasks_completed_total", {**labels, "status": "success"})
        == 2
    )
    assert registry.get_sample_value("taskiq_tasks_in_progress", labels) == 0


def test_a_task_name_that_is_not_utf8_does_not_break_the_scrape() -> None:
    from prometheus_client import generate_latest

    registry, agg = make()
    agg.task("app:caf\udce9").started += 1
    agg.apply()
    assert b"app:caf" in generate_latest(registry)


def test_without_the_bulk_path_fold_observes_at_once() -> None:
    """fold() bounds the memory of a process whose tallies are not applied (its buffer
    is full): without the bulk path it cannot keep counts for later, so it observes."""
    registry, agg = make(REFUSED)
    tally = agg.task("app:t")
    tally.waits += [0.2, 4.0]
    tally.fold()
    labels = {"task_name": "app:t"}
    assert registry.get_sample_value("taskiq_task_queue_wait_seconds_count", labels) == 2
    assert registry.get_sample_value("taskiq_task_queue_wait_seconds_sum", labels) == 4.2
    assert tally.waits == []
    agg.apply()
    assert registry.get_sample_value("taskiq_task_queue_wait_seconds_count", labels) == 2
