"""The gate on prometheus_client's internals: the installed version passes the
start-up check, the range equals pyproject's, and a version or layout the check
refuses still gets the right numbers, from prometheus_client's own merge."""

from __future__ import annotations

import logging
import struct
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from prometheus_client import CollectorRegistry, Histogram, Summary, generate_latest

from exporter.metrics import prometheus_compat as compat
from exporter.metrics.multiprocess import exposition, multiprocess_registry
from exporter.metrics.names import PROMETHEUS_CLIENT_FALLBACK
from tests.test_multiprocess import _Fixed, reference, write_processes

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
COMPAT_LOGGER = "exporter.metrics.prometheus_compat"


def test_the_installed_prometheus_client_passes_the_start_up_check() -> None:
    report = compat.check_compat()
    assert report.ok, (
        f"prometheus-client {report.version} is not one taskiq-exporter can read "
        f"(supported: {compat.SPECIFIER}): {'; '.join(report.problems)}. Run the tests "
        "against it, adapt exporter/metrics/prometheus_compat.py, then widen SUPPORTED "
        "there and the requirement in pyproject.toml together."
    )
    assert compat.installed_compat().ok


def test_the_supported_range_is_pyprojects_requirement() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [requirement] = [
        Requirement(d) for d in dependencies if Requirement(d).name == "prometheus-client"
    ]
    assert requirement.specifier == SpecifierSet(compat.SPECIFIER), (
        f"pyproject.toml requires prometheus-client{requirement.specifier}, "
        f"exporter/metrics/prometheus_compat.py supports {compat.SPECIFIER}"
    )


@pytest.mark.parametrize(
    ("version", "supported"),
    [("0.24.0", True), ("0.26.0", True), ("0.26.1rc1", True), ("0.23.1", False),
     ("0.27.0", False), ("0.27.0rc1", False), ("1.0.0", False), ("unknown", False)],
)  # fmt: skip
def test_in_range(version: str, supported: bool) -> None:
    assert compat.in_range(version) is supported


def test_a_real_histogram_child_gets_the_bulk_path() -> None:
    child = Histogram("h", "", ["x"], buckets=(1.0, 2.0), registry=None).labels("a")
    assert compat.histogram_adder(child, 3, compat.installed_compat()) is not None


def test_a_child_that_does_not_look_as_expected_gets_observe_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    report = compat.CompatReport("0.26.0+this-test", ())  # a version only this test uses
    summary = Summary("s", "", ["x"], registry=None).labels("a")  # a _sum, no _buckets
    histogram = Histogram("h", "", ["x"], buckets=(1.0,), registry=None).labels("a")
    with caplog.at_level(logging.WARNING, logger=COMPAT_LOGGER):
        assert compat.histogram_adder(summary, 2, report) is None
        assert compat.histogram_adder(histogram, 5, report) is None  # other buckets
        assert compat.histogram_adder(summary, 2, report) is None
    assert len(caplog.records) == 1
    assert "0.26.0+this-test" in caplog.records[0].getMessage()


def task_sums(processes: int) -> dict[str, int]:
    """taskiq_tasks_sent_total by task, as tests.test_multiprocess's writers count it."""
    sums: dict[str, int] = {}
    for n in range(1, processes + 1):
        for i in range(3 + n):
            task = f"app:task_{(i * 7 + n) % 5}"
            sums[task] = sums.get(task, 0) + i + 1
    return sums


def test_an_unsupported_version_falls_back_to_prometheus_clients_merge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "metrics"
    write_processes(directory, 3)
    with caplog.at_level(logging.WARNING):
        report = compat.check_compat("0.99.0")
        registry = multiprocess_registry(str(directory), reap_dead=False, compat=report)
        assert not report.ok
        assert registry.fallback
        for _ in range(3):
            *got, state = registry.collect()
            expected = reference(directory)
            assert [(m.name, m.samples) for m in got] == [(m.name, m.samples) for m in expected]
            stock = CollectorRegistry()
            stock.register(_Fixed([*expected, state]))
            assert exposition(registry) == generate_latest(stock)
    for task, sent in task_sums(3).items():
        assert registry.get_sample_value("taskiq_tasks_sent_total", {"task_name": task}) == sent
    assert registry.get_sample_value(PROMETHEUS_CLIENT_FALLBACK) == 1
    [warning] = [r.getMessage() for r in caplog.records]  # one, from the check
    assert "prometheus-client 0.99.0 is not supported" in warning
    assert compat.SPECIFIER in warning


def test_the_fallback_skips_a_file_it_cannot_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "metrics"
    write_processes(directory, 2)
    healthy = list(directory.glob("*.db"))
    histogram = next(directory.glob("histogram_*.db")).read_bytes()
    (directory / "histogram_999993.db").write_bytes(histogram[:4000])  # killed mid-write
    (directory / "counter_999991.db").write_bytes(b"")
    refused = compat.CompatReport("0.0.0", ("refused by the test",))
    registry = multiprocess_registry(str(directory), reap_dead=False, compat=refused)
    with caplog.at_level(logging.WARNING, logger="exporter.metrics.multiprocess"):
        for _ in range(2):
            *got, _state = registry.collect()
            expected = reference(directory, healthy)
            assert [(m.name, m.samples) for m in got] == [(m.name, m.samples) for m in expected]
    broken = ["counter_999991.db", "histogram_999993.db"]
    warned = sorted(name for r in caplog.records for name in broken if name in r.getMessage())
    assert warned == broken  # once each


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by name and labels, but pid (the writers' pids differ per run)."""
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))): s.value
        for m in registry.collect()
        for s in m.samples
    }


def test_the_public_api_writers_and_the_fallback_merge_give_the_same_numbers(
    tmp_path: Path,
) -> None:
    """Workers that observe() every value, scraped by prometheus_client's merge, show
    what the bulk writers and the fast merge show."""
    write_processes(tmp_path / "bulk", 3)
    write_processes(tmp_path / "public", 3, histograms="public")
    refused = compat.CompatReport("0.0.0", ("refused by the test",))
    fast = multiprocess_registry(str(tmp_path / "bulk"), reap_dead=False)
    fallback = multiprocess_registry(str(tmp_path / "public"), reap_dead=False, compat=refused)
    assert not fast.fallback
    assert fallback.fallback
    got, want = samples(fallback), samples(fast)
    fallback_key = (PROMETHEUS_CLIENT_FALLBACK, ())
    assert (got.pop(fallback_key), want.pop(fallback_key)) == (1, 0)
    assert got.keys() == want.keys()
    for key, value in want.items():  # a sum added at once or value by value
        assert got[key] == pytest.approx(value, rel=1e-12), key


def with_another_header(path: Path) -> None:
    """The same entries behind a 16-byte header: a layout this package does not know."""
    data = path.read_bytes()
    used = struct.unpack_from("=i", data)[0]
    path.write_bytes(struct.pack("=i", used + 8) + bytes(12) + data[8:used])


def test_files_of_an_unknown_layout_are_not_served_silently_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers writing a layout the service does not know (another prometheus_client
    in another image): one warning that says so, besides the one per file."""
    directory = tmp_path / "metrics"
    write_processes(directory, 2)
    for path in directory.glob("*.db"):
        with_another_header(path)
    registry = multiprocess_registry(str(directory), reap_dead=False)
    with caplog.at_level(logging.WARNING, logger="exporter.metrics.merge"):
        for _ in range(3):
            assert registry.get_sample_value("taskiq_tasks_sent_total", {"task_name": "x"}) is None
    [summary] = [r.getMessage() for r in caplog.records if "not one of" in r.getMessage()]
    assert compat.SPECIFIER in summary
