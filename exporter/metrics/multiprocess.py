"""prometheus_client multiprocess mode, done carefully.

prometheus_client chooses how it stores values when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``. Our entry points may run after something else
imported it, so :func:`enable_multiprocess` re-selects the value class for the
metrics created afterwards.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import values
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector, CollectorRegistry

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


def _readable(path: str) -> bool:
    try:
        for _ in MmapedDict.read_all_values_from_file(path):
            pass
    except FileNotFoundError:
        return False
    except Exception:
        logger.warning("skipping unreadable metrics file %s (killed process?)", path)
        return False
    return True


class SafeMultiProcessCollector(Collector):
    """Sums every process's files; a truncated or empty file of a killed process
    is skipped with a warning instead of breaking the whole scrape."""

    def __init__(self, directory: str, *, reap_dead: bool = True) -> None:
        self._dir = directory
        self._reap_dead = reap_dead

    def collect(self) -> Iterator[Metric]:
        if self._reap_dead:
            reap_dead_processes(self._dir)
        files = [f for f in glob.glob(os.path.join(self._dir, "*.db")) if _readable(f)]
        merged: Iterable[Metric] = MultiProcessCollector.merge(files, accumulate=True)
        yield from merged


def multiprocess_registry(directory: str, *, reap_dead: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SafeMultiProcessCollector(directory, reap_dead=reap_dead))
    return registry
