"""Multiprocess collection: processes' files summed, broken files skipped, the
gauges of dead processes dropped."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.metrics.multiprocess import (
    MultiProcessRegistry,
    exposition,
    multiprocess_registry,
    reap_dead_processes,
    reset_directory,
)
from exporter.metrics.names import PROMETHEUS_CLIENT_FALLBACK

# A child process that imports prometheus_client *before* the directory is set,
# as an app importing taskiq's own middleware would, then uses the middleware.
CHILD = """
import asyncio, sys
import prometheus_client  # noqa: F401  (imported first on purpose)
from taskiq import InMemoryBroker
from exporter import MonitoringMiddleware

async def main():
    mw = MonitoringMiddleware(database_url=sys.argv[2], multiproc_dir=sys.argv[1])
    broker = InMemoryBroker(await_inplace=True).with_middlewares(mw)

    @broker.task(task_name="mp:task")
    async def task() -> None:
        return None

    await broker.startup()
    for _ in range(int(sys.argv[3])):
        await task.kiq()
    if sys.argv[4] == "stop":
        await broker.shutdown()
    else:
        mw.runtime.aggregator.apply()  # exit without shutdown: a killed worker

asyncio.run(main())
"""


def run_child(directory: Path, db: str, tasks: int, how: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), db, str(tasks), how],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return len(list(directory.glob("*.db")))


def test_processes_sum_and_dead_ones_leave_no_live_gauges(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    reset_directory(str(directory))
    db = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    run_child(directory, db, 3, "stop")
    run_child(directory, db, 4, "kill")
    registry = multiprocess_registry(str(directory))
    labels = {"task_name": "mp:task"}
    assert registry.get_sample_value("taskiq_tasks_started_total", labels) == 7
    assert (
        registry.get_sample_value("taskiq_tasks_completed_total", {**labels, "status": "success"})
        == 7
    )
    # The stopped process removed its live gauges; the "killed" one is reaped at scrape.
    assert not list(directory.glob("gauge_live*"))
    assert registry.get_sample_value("taskiq_tasks_in_progress", labels) in (None, 0.0)


def test_a_corrupt_or_empty_file_does_not_break_the_scrape(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    reset_directory(str(directory))
    db = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    run_child(directory, db, 2, "stop")
    (directory / "counter_999991.db").write_bytes(b"")
    (directory / "counter_999992.db").write_bytes(b"\xff" * 64)
    good = next(directory.glob("histogram_*.db"))
    (directory / "histogram_999993.db").write_bytes(good.read_bytes()[:100])
    registry = multiprocess_registry(str(directory))
    assert registry.get_sample_value("taskiq_tasks_started_total", {"task_name": "mp:task"}) == 2


def test_reap_dead_processes_removes_only_dead_pids(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / f"gauge_livesum_{proc.pid}.db").write_bytes(b"")
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / f"counter_{proc.pid}.db").write_bytes(b"")
    assert reap_dead_processes(str(tmp_path)) == [proc.pid]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f"gauge_livesum_{os.getpid()}.db", f"counter_{proc.pid}.db"])


# Several processes write every kind of series: the product's instruments (counters,
# histograms, a livesum gauge) for a few task names, and a gauge in each of
# prometheus_client's other multiprocess modes.
WRITER = """
import sys, time
from exporter.metrics.multiprocess import enable_multiprocess

enable_multiprocess(sys.argv[1])
from prometheus_client import CollectorRegistry, Gauge, Summary
from exporter.metrics.aggregator import Aggregator
from exporter.metrics.instruments import Instruments
from exporter.settings import DEFAULT_DURATION_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS

n = int(sys.argv[2])
registry = CollectorRegistry()
inst = Instruments(registry, duration_buckets=DEFAULT_DURATION_BUCKETS,
                   queue_wait_buckets=DEFAULT_QUEUE_WAIT_BUCKETS)
if sys.argv[3] == "public":  # as with a prometheus_client the compat check refuses
    from exporter.metrics.prometheus_compat import CompatReport
    agg = Aggregator(inst, compat=CompatReport("0.0.0", ("refused by the test",)))
else:
    agg = Aggregator(inst)
for i in range(3 + n):
    tally = agg.task(f"app:task_{(i * 7 + n) % 5}")
    tally.sent += i + 1
    tally.started += i
    tally.success += i
    tally.failed += n
    tally.in_progress += n - 1
    tally.duration["success"].observe(0.003 * (i + 1) ** 3)
    tally.duration["failed"].observe(0.1 / (n + 1))
    tally.queue_wait.observe(0.02 * i)
agg.apply()
for mode in ("all", "liveall", "min", "livemin", "max", "livemax", "sum", "mostrecent",
             "livemostrecent"):
    g = Gauge(f"mode_{mode}", f"A {mode} gauge", ["kind"], multiprocess_mode=mode,
              registry=registry)
    g.labels("a").set(n * 1.5 - 2)
    g.labels(f"only-{n}").set(-n)
Summary("request_seconds", "A summary", registry=registry).observe(0.25 * n)
time.sleep(0.01)
"""


def write_processes(directory: Path, processes: int, *, histograms: str = "bulk") -> None:
    """``histograms="public"``: the writers observe each value (the compat fallback)."""
    reset_directory(str(directory))
    for n in range(1, processes + 1):
        subprocess.run(
            [sys.executable, "-c", WRITER, str(directory), str(n), histograms],
            check=True, timeout=120, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": ""},
        )  # fmt: skip


def reference(directory: Path, files: list[Path] | None = None) -> list[Metric]:
    paths = sorted(str(p) for p in (directory.glob("*.db") if files is None else files))
    return list(MultiProcessCollector.merge(paths, accumulate=True))


def assert_same_as_prometheus_client(
    directory: Path, registry: MultiProcessRegistry, files: list[Path] | None = None
) -> None:
    """Our families equal prometheus_client's merge of the same (or the given healthy)
    files, sample by sample and in order, and so do both expositions, byte for byte;
    the registry adds its fallback gauge after them."""
    expected = reference(directory, files)
    *got, state = registry.collect()
    assert state.name == PROMETHEUS_CLIENT_FALLBACK
    assert [s.value for s in state.samples] == [int(registry.fallback)]
    assert [(m.name, m.type, m.documentation) for m in got] == [
        (m.name, m.type, m.documentation) for m in expected
    ]
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.samples == theirs.samples, mine.name  # sample by sample, in order
    stock = CollectorRegistry()
    stock.register(_Fixed([*expected, state]))
    assert exposition(registry) == generate_latest(stock)
    assert exposition(registry, openmetrics_format=True) == openmetrics_latest(stock)


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def test_output_equals_prometheus_clients_merge(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    write_processes(directory, 3)
    # Dead writers: keep their live gauges to compare every mode.
    registry = multiprocess_registry(str(directory), reap_dead=False)
    assert_same_as_prometheus_client(directory, registry)
    assert registry.get_sample_value(
        "taskiq_tasks_sent_total", {"task_name": "app:task_1"}
    ) == reference_value(directory, "taskiq_tasks_sent_total", {"task_name": "app:task_1"})
    assert_same_as_prometheus_client(directory, registry)  # from the cached layouts


def reference_value(directory: Path, name: str, labels: dict[str, str]) -> float | None:
    for metric in reference(directory):
        for s in metric.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def test_files_that_grow_change_or_are_replaced_between_scrapes(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    write_processes(directory, 2)
    registry = multiprocess_registry(str(directory), reap_dead=False)
    assert_same_as_prometheus_client(directory, registry)
    counter = sorted(directory.glob("counter_*.db"))[0]
    histogram = sorted(directory.glob("histogram_*.db"))[-1]
    # A live process updates values and creates new series (appended entries).
    writer = MmapedDict(str(counter))
    key = mmap_key("taskiq_tasks_sent", "taskiq_tasks_sent_total", ["task_name"], ["app:new"],
                   "Tasks sent by clients.")  # fmt: skip
    writer.write_value(key, 41.0, 0.0)
    for existing, value, _ in list(writer.read_all_values()):
        writer.write_value(existing, value + 1, 0.0)
    writer.close()
    assert_same_as_prometheus_client(directory, registry)
    # A file replaced at the same path (its process died, the pid came back): the
    # same keys in another order.
    content = histogram.read_bytes()
    entries = list(MmapedDict.read_all_values_from_file(str(histogram)))
    histogram.unlink()
    replacement = MmapedDict(str(histogram))
    for existing, value, at, _ in reversed(entries):
        replacement.write_value(existing, value * 2, at)
    replacement.close()
    assert_same_as_prometheus_client(directory, registry)
    histogram.write_bytes(content)
    assert_same_as_prometheus_client(directory, registry)
    # And one that goes away.
    counter.unlink()
    assert_same_as_prometheus_client(directory, registry)


def test_exposition_appends_extra_families_once(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    write_processes(directory, 1)
    registry = multiprocess_registry(str(directory), reap_dead=False)
    extra = GaugeMetricFamily("store_up", "1 when the store answered")
    extra.add_metric([], 1)
    body = exposition(registry, [extra], openmetrics_format=True).decode()
    assert body.endswith("store_up 1.0\n# EOF\n")
    assert body.count("# EOF") == 1
    families = {f.name for f in text_string_to_metric_families(body)}
    assert {"store_up", "taskiq_tasks_sent", "taskiq_task_duration_seconds"} <= families


def test_each_broken_file_is_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "metrics"
    write_processes(directory, 1)
    healthy = list(directory.glob("*.db"))
    (directory / "gauge_livesum_999994.db").write_bytes(bytes(65536))  # being created: empty
    broken = ["counter_999991.db", "counter_999992.db", "histogram_999993.db"]
    (directory / broken[0]).write_bytes(b"")  # killed while creating it
    (directory / broken[1]).write_bytes(b"\xff" * 64)
    histogram = next(directory.glob("histogram_*.db")).read_bytes()
    (directory / broken[2]).write_bytes(histogram[:4000])  # truncated mid-entries
    registry = multiprocess_registry(str(directory), reap_dead=False)
    with caplog.at_level(logging.WARNING, logger="exporter.metrics.merge"):
        for _ in range(3):
            assert_same_as_prometheus_client(directory, registry, files=healthy)
    warned = [name for r in caplog.records for name in broken if name in r.getMessage()]
    assert warned == broken  # once each, and none for the file being created


def test_a_label_that_is_not_utf8_does_not_fail_the_scrape(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    write_processes(directory, 1)
    writer = MmapedDict(str(directory / "counter_999995.db"))
    key = mmap_key("other_jobs", "other_jobs_total", ["job"], ["bad\udcff"], "Another app's jobs.")
    writer.write_value(key, 3.0, 0.0)
    writer.close()
    registry = multiprocess_registry(str(directory), reap_dead=False)
    body = exposition(registry).decode()
    assert 'other_jobs_total{job="bad?"} 3.0' in body
    assert "taskiq_tasks_sent_total" in body
