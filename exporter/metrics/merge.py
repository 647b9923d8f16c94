"""The processes' files merged as prometheus_client's ``MultiProcessCollector.merge``
does: the same families, samples, values and (for files in the same order) sample
order, with ``accumulate=True``.

What differs is the cost and the failure mode. Each file stays mapped and its
layout parsed (exporter.metrics.prometheus_compat); the plan of the output
(exporter.metrics.merge_plan) and, for each file, the permutation that lines its
values up with the plan's slots are rebuilt only when a file gains entries or a
file comes or goes, so a scrape sums processes with C-level operations. A file
that cannot be read (truncated or empty, from a killed process) is skipped with
a warning instead of failing the whole scrape.

The file names, the keys and the merge rules are prometheus_client's private
ones: exporter.metrics.prometheus_compat checks them at start-up.
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import os
import struct
from collections.abc import Callable
from operator import add, itemgetter
from typing import Any

from exporter.metrics.merge_plan import Family, FamilyPlan, Labels, Series
from exporter.metrics.prometheus_compat import (
    SPECIFIER,
    CorruptFile,
    Layout,
    LayoutChanged,
    MappedFile,
)

logger = logging.getLogger(__name__)

KINDS = frozenset({"counter", "gauge", "histogram", "summary"})
GAUGE_MODES = frozenset(
    f"{live}{mode}" for live in ("", "live") for mode in ("all", "sum", "min", "max", "mostrecent")
)
# The series table keeps the series of files that are gone (dead processes' gauges):
# past this size it starts again from the files that exist.
_TABLE_LIMIT = 200_000
_SERIALS = itertools.count()
Values = tuple[float, ...]
Picker = Callable[[Values], Values]


class _File:
    __slots__ = ("ids", "kind", "layout", "mapped", "mode", "pid", "serial")

    def __init__(self, path: str) -> None:
        parts = os.path.basename(path).split("_")
        self.kind = parts[0]
        is_gauge = self.kind == "gauge" and len(parts) > 2
        self.mode = parts[1] if is_gauge else ""
        self.pid = parts[2][:-3] if is_gauge else ""  # as prometheus_client reads it
        if self.kind not in KINDS or (self.kind == "gauge" and self.mode not in GAUGE_MODES):
            raise CorruptFile(f"not a prometheus_client multiprocess file name: {path}")
        self.serial = next(_SERIALS)  # not id(): a new object may reuse a freed one's
        self.mapped = MappedFile(path)
        self.layout = Layout(stamps=self.kind == "gauge")
        self.ids: list[int] = []


def _parse_key(key: str) -> tuple[str, str, Labels, str]:
    metric, name, labels, help_text = json.loads(key)
    if not (isinstance(metric, str) and isinstance(name, str) and isinstance(labels, dict)):
        raise CorruptFile(f"not a metric key: {key[:200]!r}")
    return metric, name, tuple(sorted(labels.items())), str(help_text)


class _Table:
    """Every series seen, by identity; keys parsed once."""

    def __init__(self) -> None:
        self.series: list[Series] = []
        self._ids: dict[tuple[Any, ...], int] = {}
        self._parsed: dict[str, tuple[str, str, Labels, str]] = {}
        self._known: dict[tuple[str, str, str], dict[str, int]] = {}

    def ids(self, keys: list[str], f: _File) -> list[int]:
        # The processes' files hold the same keys: most are found here at once.
        scope = (f.kind, f.mode, f.pid) if f.kind == "gauge" else (f.kind, "", "")
        known = self._known.setdefault(scope, {})
        out = []
        for key in keys:
            sid = known.get(key)
            if sid is None:
                sid = known[key] = self._identify(key, f)
            out.append(sid)
        return out

    def _identify(self, key: str, f: _File) -> int:
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = self._parsed[key] = _parse_key(key)
        metric, name, labels, _ = parsed
        le = None
        if f.kind == "histogram":
            for label, value in labels:
                if label == "le":
                    le = float(value)
                    labels = tuple(item for item in labels if item[0] != "le")
                    break
        identity: tuple[Any, ...] = (f.kind, metric, name, labels, le)
        if f.kind == "gauge":  # one series per process; the plan folds them
            identity = (*identity, f.mode, f.pid)
            labels = (*labels, ("pid", f.pid))
        sid = self._ids.get(identity)
        if sid is None:
            sid = self._ids[identity] = len(self.series)
            self.series.append(Series(metric, name, labels, le))
        return sid

    def help_of(self, key: str) -> str:
        return self._parsed[key][3]


def _picker(positions: list[int]) -> Picker:
    if len(positions) == 1:
        (only,) = positions
        return lambda values: (values[only],)
    if not positions:
        return lambda values: ()
    getter: Picker = itemgetter(*positions)
    return getter


class _Space:
    """The summed series of one kind of file (counter, histogram, summary): a run of
    slots, and for each file the permutation that lines its values up with them."""

    def __init__(self, start: int, size: int) -> None:
        self.start, self.size = start, size
        # serial -> (values in slot order, with 0.0 where the file lacks the series;
        # the entries that fall on a slot taken already, a key repeated in one file)
        self.pickers: dict[int, tuple[Picker, list[tuple[int, int]]]] = {}

    def add_file(self, f: _File, slot: dict[int, int]) -> None:
        missing = len(f.ids)  # values + (0.0,) has 0.0 there
        positions = [missing] * self.size
        extra = []
        for i, sid in enumerate(f.ids):
            at = slot[sid] - self.start
            if positions[at] == missing:
                positions[at] = i
            else:
                extra.append((at, i))
        self.pickers[f.serial] = (_picker(positions), extra)

    def sum(self, loaded: list[tuple[_File, Values, Values]]) -> list[float]:
        total = [0.0] * self.size  # from 0.0 in file order, as prometheus_client adds
        for f, values, _ in loaded:
            found = self.pickers.get(f.serial)
            if found is None:
                continue
            pick, extra = found
            total = list(map(add, total, pick((*values, 0.0))))
            for at, i in extra:
                total[at] += values[i]
        return total


class Merger:
    """Merges the ``*.db`` files of one directory; not thread-safe."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._table = _Table()
        self._files: dict[str, _File] = {}
        self._warned: set[str] = set()
        self._none_readable = False  # warned that not one file could be read
        self._signature: tuple[Any, ...] = ()
        self._plan: list[FamilyPlan] = []
        self._spaces: list[_Space] = []
        self._gauges: dict[int, list[int]] = {}  # serial -> the slot of each entry
        self._size = 0

    def _load(self, path: str) -> tuple[_File, Values, Values]:
        for _ in range(2):
            f = self._files.get(path)
            if f is not None and not f.mapped.is_current():
                self._drop(path)  # replaced (a new process with the same pid)
                f = None
            if f is None:
                f = self._files[path] = _File(path)
            try:
                used = f.mapped.used()
                if used < f.layout.used:
                    raise LayoutChanged(path)
                f.ids += self._table.ids(f.layout.extend(f.mapped.data, used), f)
                return (f, *f.layout.unpack(f.mapped.data))
            except LayoutChanged:
                self._drop(path)
        raise CorruptFile(f"{path} keeps changing under the reader")

    def _drop(self, path: str) -> None:
        f = self._files.pop(path, None)
        if f is not None:
            f.mapped.close()

    def _read_all(self) -> list[tuple[_File, Values, Values]]:
        loaded = []
        paths = sorted(glob.glob(os.path.join(glob.escape(self.directory), "*.db")))
        for path in paths:
            try:
                loaded.append(self._load(path))
            except FileNotFoundError:
                self._drop(path)  # removed since the listing (mark_process_dead)
                continue
            except (CorruptFile, OSError, ValueError, TypeError, struct.error) as exc:
                self._drop(path)
                if path not in self._warned:
                    self._warned.add(path)
                    logger.warning("skipping unreadable metrics file %s (killed process?): %s",
                                   path, exc)  # fmt: skip
                continue
            self._warned.discard(path)
        for gone in self._files.keys() - set(paths):
            self._drop(gone)
        none_readable = bool(paths) and not loaded and bool(self._warned)
        if none_readable and not self._none_readable:
            # Not a killed process's file: the workers write a layout unknown here.
            logger.warning("not one of the %d metrics files in %s could be read: do the workers "
                           "run a prometheus-client%s, as this process does?",
                           len(paths), self.directory, SPECIFIER)  # fmt: skip
        self._none_readable = none_readable
        return loaded

    def close(self) -> None:
        """Unmap every file (the merger can still be used: it maps them again)."""
        for path in list(self._files):
            self._drop(path)

    def merge(self) -> list[Family]:
        loaded = self._read_all()
        if len(self._table.series) > _TABLE_LIMIT:
            for path in list(self._files):
                self._drop(path)
            self._table, self._signature = _Table(), ()
            loaded = self._read_all()
        signature = tuple((f.serial, len(f.ids)) for f, _, _ in loaded)
        if signature != self._signature:
            self._build([f for f, _, _ in loaded])
            self._signature = signature
        acc: list[float] = []
        for space in self._spaces:
            acc += space.sum(loaded)
        stamps: list[float] = []
        if self._gauges:
            acc += [0.0] * (self._size - len(acc))
            stamps = [0.0] * self._size
            for f, values, times in loaded:
                slots = self._gauges.get(f.serial)
                if slots is None:
                    continue
                for at, value, when in zip(slots, values, times, strict=True):
                    acc[at] = value
                    stamps[at] = when
        return [plan.emit(acc, stamps) for plan in self._plan]

    def _build(self, files: list[_File]) -> None:
        """The output's structure, in prometheus_client's order for these files, and
        the slots of the merged values: each summed kind's series, then the gauges'."""
        series = self._table.series
        plans: dict[str, FamilyPlan] = {}
        seen: set[int] = set()
        for f in files:
            for sid, key in zip(f.ids, f.layout.keys, strict=True):
                if sid in seen:
                    continue
                seen.add(sid)
                s = series[sid]
                plan = plans.get(s.metric)
                if plan is None:
                    plan = plans[s.metric] = FamilyPlan(s.metric, f.kind, self._table.help_of(key))
                if f.kind == "gauge":
                    plan.mode = f.mode  # as prometheus_client: the last file's mode wins
                plan.add(sid, s)
        slot: dict[int, int] = {}
        self._spaces = []
        for kind in dict.fromkeys(f.kind for f in files if f.kind != "gauge"):
            members = [f for f in files if f.kind == kind]
            space = _Space(len(slot), 0)
            for f in members:
                for sid in f.ids:
                    slot.setdefault(sid, len(slot))
            space.size = len(slot) - space.start
            for f in members:
                space.add_file(f, slot)
            self._spaces.append(space)
        self._gauges = {}
        for f in files:
            if f.kind == "gauge":
                self._gauges[f.serial] = [slot.setdefault(sid, len(slot)) for sid in f.ids]
        self._size = len(slot)
        le_text: dict[float, str] = {}
        for plan in plans.values():
            plan.finish(slot, le_text)
        self._plan = list(plans.values())
