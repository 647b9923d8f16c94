"""prometheus_client multiprocess mode, done carefully.

prometheus_client chooses how it stores values when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``. Our entry points may run after something else
imported it, so :func:`enable_multiprocess` re-selects the value class for the
metrics created afterwards.

/metrics merges the processes' files with :class:`SafeMultiProcessCollector`,
which reads prometheus_client's private layout, or, where
exporter.metrics.prometheus_compat does not vouch for the installed version, with
prometheus_client's own merge (:class:`StockMultiProcessCollector`).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import logging
import os
import re
import stat
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.metrics.exposition import Exposition, UnexpectedLayout, render_metrics, to_metric
from exporter.metrics.merge import Merger
from exporter.metrics.merge_plan import Family
from exporter.metrics.names import PROMETHEUS_CLIENT_FALLBACK
from exporter.metrics.prometheus_compat import CompatReport, installed_compat, select_mmap_values
from exporter.processes import pid_alive

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")
# The files prometheus_client writes (values.MultiProcessValue): one per metric
# type, a gauge's per mode, and process id.
_CLIENT_FILE = re.compile(
    r"^(?:counter|histogram|summary|gauge_(?:live)?(?:all|min|max|sum|mostrecent))_\d+\.db$"
)
# What MultiProcessCollector.merge raises on a file it cannot read.
_UNREADABLE = (OSError, ValueError, RuntimeError, LookupError, TypeError, struct.error)

logger = logging.getLogger(__name__)


def configured_dir(explicit: str | None = None) -> str | None:
    """The multiprocess directory: the explicit setting, else the standard variable."""
    return explicit or os.environ.get(ENV_VAR) or None


def enable_multiprocess(directory: str) -> None:
    """Make metrics created from now on write to ``directory``."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    os.environ[ENV_VAR] = directory
    select_mmap_values()


class UnsafeDirectory(Exception):
    """A metrics directory :func:`reset_directory` refuses; the message says why."""


def reset_directory(directory: str) -> None:
    """Remove a previous run's prometheus_client files from ``directory`` before
    the workers of a run start (stale files add up), creating it if needed.

    Only regular files named as prometheus_client names them go: the directory may
    hold other files, or be named by mistake. A symlink, a directory of another
    user and one every user may write to (sticky or not, /tmp itself) raise
    :class:`UnsafeDirectory`: files planted there would be summed in the scrape, or
    opened and written through by the workers."""
    path = Path(directory)
    if path.is_symlink():
        raise UnsafeDirectory(f"{path} is a symbolic link: give the directory it points to")
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    except FileExistsError:
        raise UnsafeDirectory(f"{path} exists and is not a directory") from None
    # Through a descriptor: what is checked is what is emptied, even if the path
    # is swapped meanwhile.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        _check_owned(path, os.fstat(fd))
        for name in os.listdir(fd):
            if _CLIENT_FILE.match(name) and _regular(name, fd):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def _check_owned(path: Path, st: os.stat_result) -> None:
    if st.st_uid != os.geteuid():
        raise UnsafeDirectory(
            f"{path} belongs to another user (uid {st.st_uid}): use a directory of your own"
        )
    if st.st_mode & stat.S_IWOTH:
        raise UnsafeDirectory(
            f"{path} is writable by every user: use a directory of its own, e.g. "
            f"{path / 'taskiq-exporter-metrics'}, or chmod o-w it"
        )


def _regular(name: str, fd: int) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


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


class StockMultiProcessCollector(Collector):
    """prometheus_client's own merge, the fallback where the installed version's files
    are not known to be readable by :class:`SafeMultiProcessCollector`: slower (each
    scrape parses every file and formats every sample) but right for any version.
    A file it cannot read (a killed process's) is left out with a warning too."""

    def __init__(self, directory: str, *, reap_dead: bool = True) -> None:
        self._dir = directory
        self._reap_dead = reap_dead
        self._warned: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        if self._reap_dead:
            reap_dead_processes(self._dir)
        # Sorted as the fast collector's: MultiProcessCollector takes directory order.
        paths = sorted(glob.glob(os.path.join(glob.escape(self._dir), "*.db")))
        try:
            metrics = MultiProcessCollector.merge(paths, accumulate=True)
        except _UNREADABLE:  # one bad file fails the whole merge: find it
            metrics = MultiProcessCollector.merge(self._readable(paths), accumulate=True)
        return iter(metrics)

    def _readable(self, paths: list[str]) -> list[str]:
        readable = []
        for path in paths:
            try:
                MultiProcessCollector.merge([path], accumulate=True)
            except FileNotFoundError:
                continue  # removed since the listing (mark_process_dead)
            except _UNREADABLE as exc:
                if path not in self._warned:
                    self._warned.add(path)
                    logger.warning("skipping unreadable metrics file %s (killed process?): %r",
                                   path, exc)  # fmt: skip
                continue
            self._warned.discard(path)
            readable.append(path)
        return readable

    def render(self, *, openmetrics_format: bool = False) -> str:
        """The exposition of every family (OpenMetrics without the final ``# EOF``)."""
        return render_metrics(self.collect(), openmetrics_format=openmetrics_format)


def fallback_family(fallback: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        PROMETHEUS_CLIENT_FALLBACK,
        "1 when /metrics merges with prometheus_client's MultiProcessCollector because the "
        "installed prometheus-client is not one taskiq-exporter supports",
        value=int(fallback),
    )


@functools.cache
def _fallback_text(fallback: bool, openmetrics_format: bool) -> str:
    return render_metrics([fallback_family(fallback)], openmetrics_format=openmetrics_format)


class _FallbackState(Collector):
    def __init__(self, fallback: bool) -> None:
        self.fallback = fallback

    def collect(self) -> Iterator[Metric]:
        yield fallback_family(self.fallback)


class MultiProcessRegistry(CollectorRegistry):
    """A registry holding one multiprocess collector, which can also render itself
    quickly (:meth:`render`), and the gauge that says whether it is the fallback."""

    def __init__(self, collector: SafeMultiProcessCollector | StockMultiProcessCollector) -> None:
        super().__init__(auto_describe=False)
        self.collector = collector
        self.fallback = isinstance(collector, StockMultiProcessCollector)
        self.register(collector)
        self.register(_FallbackState(self.fallback))

    def render(self, *, openmetrics_format: bool = False) -> str:
        head = self.collector.render(openmetrics_format=openmetrics_format)
        return head + _fallback_text(self.fallback, openmetrics_format)


def multiprocess_registry(
    directory: str, *, reap_dead: bool = True, compat: CompatReport | None = None
) -> MultiProcessRegistry:
    """The registry of every process's files in ``directory``, merged the fast way
    when ``compat`` (by default the installed prometheus_client's start-up check)
    allows it, by prometheus_client's MultiProcessCollector otherwise."""
    report = installed_compat() if compat is None else compat
    if report.ok:
        return MultiProcessRegistry(SafeMultiProcessCollector(directory, reap_dead=reap_dead))
    return MultiProcessRegistry(StockMultiProcessCollector(directory, reap_dead=reap_dead))


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
