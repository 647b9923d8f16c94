"""The seed's unit tests of the metrics arithmetic (T029)."""

from exporter.service.metrics_api import task_metrics
from exporter.store.counts import Totals as T


def test_calculate_avg_duration_excludes_failed_tasks() -> None:
    totals = {("t", "success"): T(2, 300.0), ("t", "failed"): T(3, 9_000.0)}
    [m] = task_metrics(totals)
    assert m.avg_duration_ms == 150.0


def test_success_rate_calculation() -> None:
    totals = {("t", "success"): T(3, 30.0), ("t", "failed"): T(1, 5.0), ("t", "running"): T(4, 0.0)}
    [m] = task_metrics(totals)
    assert m.success_rate == 0.75
    assert (m.total_executions, m.running, m.pending) == (8, 4, 0)


def test_nothing_completed_gives_nulls() -> None:
    [m] = task_metrics({("t", "pending"): T(2, 0.0)})
    assert m.success_rate is None
    assert m.avg_duration_ms is None
    assert m.total_executions == 2


def test_sorted_by_name_and_empty_dropped() -> None:
    totals = {("b", "success"): T(1, 1.0), ("a", "failed"): T(1, 1.0), ("c", "success"): T(0, 0.0)}
    assert [m.task_name for m in task_metrics(totals)] == ["a", "b"]


def test_retried_failures_are_not_final_outcomes() -> None:
    totals = {("t", "success"): T(2, 20.0), ("t", "failed"): T(5, 50.0, retried=3)}
    [m] = task_metrics(totals)
    assert (m.failed, m.tasks_failed, m.tasks_succeeded) == (5, 2, 2)
    assert m.success_rate == 2 / 7
    assert m.outcome_success_rate == 0.5
