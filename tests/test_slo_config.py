"""The SLO file: what it accepts, its defaults, and errors that name the line and
the field of every problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dashboards.render import SLO_EXAMPLE
from exporter.slo.load import SloConfigError, load, parse
from exporter.slo.model import TaskSlo

FIVE_LINES = """\
slos:
  - task_name: app.tasks:send_email
    success: 0.99
    latency: {threshold_seconds: 5.0, objective: 0.95}
    window: 30d
"""


def _error(text: str) -> str:
    with pytest.raises(SloConfigError) as caught:
        parse(textwrap.dedent(text), source="slos.yml")
    return str(caught.value)


def test_the_five_lines_of_the_contract() -> None:
    cfg = parse(FIVE_LINES)
    (entry,) = cfg.slos
    assert entry.task_name == "app.tasks:send_email"
    assert entry.kinds() == ("success", "latency")
    assert entry.objective("success") == 0.99
    assert entry.objective("latency") == 0.95
    assert entry.threshold("latency") == 5.0
    assert entry.window == "30d"


def test_defaults_window_and_low_traffic_guard() -> None:
    (entry,) = parse("slos: [{task_name_regex: 'app\\.tasks:report_.*', success: 0.9}]").slos
    assert entry.window == "30d"
    assert entry.min_errors == 3
    assert entry.who == "/app\\.tasks:report_.*/"


def test_the_shipped_example_is_valid() -> None:
    cfg = load(SLO_EXAMPLE)
    assert [e.who for e in cfg.slos] == ["billing:charge", "/reports:.*/", "nightly:sync"]


def test_a_threshold_must_be_a_bucket_bound_and_the_error_says_which() -> None:
    message = _error(
        """\
        slos:
          - task_name: a:b
            success: 0.99
            latency:
              threshold_seconds: 4.0
              objective: 0.95
        """
    )
    assert message.startswith("slos.yml:5: slos[0].latency.threshold_seconds: 4s is not")
    assert "taskiq_task_duration_seconds" in message
    assert "2.5, 5, 10" in message
    assert "duration_buckets" in message


def test_a_threshold_on_the_workers_own_buckets() -> None:
    cfg = parse(
        "duration_buckets: [1, 4, 16]\n"
        "slos: [{task_name: a:b, latency: {threshold_seconds: 4, objective: 0.9}}]\n"
    )
    assert cfg.slos[0].threshold("latency") == 4.0
    assert "queue_wait_seconds" in _error(
        "slos: [{task_name: a:b, queue_wait: {threshold_seconds: 4, objective: 0.9}}]"
    )


@pytest.mark.parametrize(
    ("entry", "line", "where", "problem"),
    [
        ("success: 1.0", 3, "slos[0].success", "less than 1"),
        ("success: 0", 3, "slos[0].success", "greater than 0"),
        ("succes: 0.99", 3, "slos[0].succes", "Extra inputs are not permitted"),
        ("window: 30 days", 3, "slos[0].window", "not a duration"),
        ("window: 1d", 3, "slos[0].window", "shorter than 7d"),
        ("min_errors: 0", 3, "slos[0].min_errors", "greater than or equal to 1"),
        ("latency: {objective: 0.9}", 3, "slos[0].latency.threshold_seconds", "Field required"),
    ],
)
def test_errors_name_the_line_and_the_field(
    entry: str, line: int, where: str, problem: str
) -> None:
    message = _error(f"slos:\n  - task_name: a:b\n    {entry}\n")
    assert message.startswith(f"slos.yml:{line}: {where}: ")
    assert problem in message


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("{task_name: a:b}", "at least one objective"),
        ("{success: 0.9}", "either task_name or task_name_regex"),
        ("{task_name: a:b, task_name_regex: 'a.*', success: 0.9}", "either task_name"),
        ("{task_name_regex: 'a(', success: 0.9}", "not a regular expression"),
        ("{task_name_regex: '(?!a).*', success: 0.9}", "no lookaround"),
    ],
)
def test_an_entry_names_its_tasks_once_and_promises_something(entry: str, problem: str) -> None:
    assert problem in _error(f"slos:\n  - {entry}\n")


def test_every_problem_is_reported_at_once() -> None:
    message = _error(
        """\
        slos:
          - task_name: a:b
            success: 2
          - task_name: c:d
            success: 0.9
            window: 2w
            colour: red
        """
    )
    assert message.splitlines() == [
        "slos.yml:3: slos[0].success: Input should be less than 1",
        "slos.yml:7: slos[1].colour: Extra inputs are not permitted",
    ]


def test_a_task_named_twice() -> None:
    message = _error(
        "slos:\n  - {task_name: a:b, success: 0.9}\n  - {task_name: a:b, success: 0.5}\n"
    )
    assert message == "slos.yml:3: slos[1].task_name: a:b has an entry already: merge them"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("slos: [\n", "slos.yml:2: not valid YAML"),
        ("- a\n- b\n", "slos.yml:1: expected a mapping"),
        ("slos: []\n", "slos.yml:1: slos: List should have at least 1 item"),
        ("other: 1\n", "slos.yml:1: slos: Field required"),
    ],
)
def test_a_file_that_is_not_an_slo_file(text: str, expected: str) -> None:
    assert _error(text).startswith(expected)


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SloConfigError, match=r"missing\.yml: No such file"):
        load(tmp_path / "missing.yml")


def test_entries_are_immutable() -> None:
    entry = parse(FIVE_LINES).slos[0]
    assert isinstance(entry, TaskSlo)
    with pytest.raises(ValueError, match="frozen"):
        entry.success = 0.5  # type: ignore[misc]
