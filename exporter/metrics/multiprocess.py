"""prometheus_client multiprocess mode, done carefully.

prometheus_client chooses how it stores values when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``. Our entry points may run after something else
imported it, so :func:`enable_multiprocess` re-selects the value class for the
metrics created afterwards.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.metrics.exposition import Exposition, UnexpectedLayout, render_metrics, to_metric
from exporter.metrics.merge import Merger
from exporter.metrics.merge_plan import Family
from exporter.processes import pid_alive

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")

logger = logging.getLogger(__name__)


def configured_dir(explicit: str | None = None) -> str | None:
    """The multiprocess directory: the explicit setting, else the standard variable."""
    return explicit or os.environ.get(ENV_VAR) or None


def enable_multiprocess(directory: str) -> None:
    """Make metrics created from now on write to ``directory``."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    os.environ[ENV_VAR] = directory
    if values.ValueClass is values.MutexValue:
        # prometheus_client was imported before the directory was set: without
        # this, every worker would keep its counts in memory and scrapes stay empty.
        # (Only when still in-memory: a second mmap class would reopen the files.)
        values.ValueClass = values.get_value_class()


def reset_directory(directory: str) -> None:
    """Empty the directory before the workers of a run start (stale files add up)."""
    path = Path(directory)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def reap_dead_processes(directory: str) -> list[int]:
    """Drop the live-gauge files of processes that died without cleaning up (SIGKILL)."""
    dead: set[int] = set()
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        match = _LIVE_FILE.match(name)
        if match and not pid_alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        mark_process_dead(pid, directory)
    return sorted(dead)


class SafeMultiProcessCollector(Collector):
    """Sums every process's files as prometheus_client's MultiProcessCollector does;
    a truncated or empty file of a killed process is skipped with a warning instead
    of breaking the whole scrape. Each file is read once per scrape, and
    :meth:`render` writes the exposition without prometheus_client's per-sample
    formatting (exporter.metrics.merge, exporter.metrics.exposition)."""

    def __init__(self, directory: str, *, reap_dead: bool = True) -> None:
        self._dir = directory
        self._reap_dead = reap_dead
        self._merger = Merger(directory)
        self._expositions = {om: Exposition(openmetrics_format=om) for om in (False, True)}
        self._lock = threading.Lock()  # the caches are shared by concurrent scrapes

    def _merged(self) -> list[Family]:
        if self._reap_dead:
            reap_dead_processes(self._dir)
        return self._merger.merge()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            families = self._merged()
        for family in families:
            yield to_metric(family, family.keys, family.values)

    def render(self, *, openmetrics_format: bool = False) -> str:
        """The exposition of every family (OpenMetrics without the final ``# EOF``)."""
        with self._lock:
            families = self._merged()
            try:
                return self._expositions[openmetrics_format].render(families)
            except UnexpectedLayout as exc:
                logger.warning("rendering %s the slow way: unexpected exposition", exc)
        metrics = (to_metric(f, f.keys, f.values) for f in families)
        return render_metrics(metrics, openmetrics_format=openmetrics_format)


class MultiProcessRegistry(CollectorRegistry):
    """A registry holding one :class:`SafeMultiProcessCollector`, which can also
    render itself quickly (:meth:`render`)."""

    def __init__(self, collector: SafeMultiProcessCollector) -> None:
        super().__init__(auto_describe=False)
        self.collector = collector
        self.register(collector)

    def render(self, *, openmetrics_format: bool = False) -> str:
        return self.collector.render(openmetrics_format=openmetrics_format)


def multiprocess_registry(directory: str, *, reap_dead: bool = True) -> MultiProcessRegistry:
    return MultiProcessRegistry(SafeMultiProcessCollector(directory, reap_dead=reap_dead))


def exposition(
    registry: CollectorRegistry, extra: Iterable[Metric] = (), *, openmetrics_format: bool = False
) -> bytes:
    """The registry's families followed by ``extra`` in one exposition (a
    :class:`MultiProcessRegistry` renders its own part the fast way)."""
    if isinstance(registry, MultiProcessRegistry):
        head = registry.render(openmetrics_format=openmetrics_format)
    else:
        head = render_metrics(registry.collect(), openmetrics_format=openmetrics_format)
    tail = render_metrics(extra, openmetrics_format=openmetrics_format)
    return (head + tail + ("# EOF\n" if openmetrics_format else "")).encode()
