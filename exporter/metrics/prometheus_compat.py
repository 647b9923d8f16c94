"""Every use of prometheus_client's private storage, gated by one version range.

Supported: prometheus-client >=0.24,<0.27 (:data:`SUPPORTED`, equal to the
requirement in pyproject.toml; tests/test_prometheus_compat.py fails when the
two drift). Widen both only once the tests pass on the new release.

The exporter reads the multiprocess files itself (a host's scrape in
milliseconds) and the middleware adds pre-bucketed counts to histogram children.
Neither is public API, so this module holds all of it:

- the files' layout (:class:`Layout`) and key format (``mmap_dict.mmap_key``,
  parsed by exporter.metrics.merge);
- ``values.ValueClass``, re-selected by :func:`select_mmap_values`;
- a histogram child's ``_buckets`` and ``_sum`` (:func:`histogram_adder`).

exporter.metrics.merge and exporter.metrics.merge_plan also reproduce
``MultiProcessCollector.merge`` (its file names, gauge modes and 0.24's sample
order: one label set's samples together). :func:`check_compat` tries all of it
on files that prometheus_client writes. Where it fails, /metrics serves
prometheus_client's own MultiProcessCollector (exporter.metrics.multiprocess)
and the middleware calls ``Histogram.observe``: slower, but right.
"""

from __future__ import annotations

import functools
import glob
import importlib.metadata
import itertools
import logging
import mmap
import os
import re
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import values

logger = logging.getLogger(__name__)

# (lowest, first unsupported): the releases whose layout and private attributes
# the tests were run against.
SUPPORTED = ((0, 24), (0, 27))
SPECIFIER = f">={'.'.join(map(str, SUPPORTED[0]))},<{'.'.join(map(str, SUPPORTED[1]))}"

_INT = struct.Struct("=i")
_HEADER = 8
# Entries appended after the first parse get their own struct; past this many
# pieces the layout recompiles into one.
_MAX_CHUNKS = 8
_VALUE_HOOKS = ("ValueClass", "MutexValue", "get_value_class")


class CorruptFile(Exception):
    """The file cannot be a complete multiprocess file (e.g. a killed process's)."""


class LayoutChanged(Exception):
    """The file at this path is not the one the layout was learnt from."""


def _map(path: str) -> tuple[mmap.mmap, tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if st.st_size < _HEADER:
            raise CorruptFile(f"{st.st_size} bytes, shorter than the header")
        return mmap.mmap(fd, st.st_size, access=mmap.ACCESS_READ), (st.st_dev, st.st_ino)
    finally:
        os.close(fd)  # the mapping keeps the file (and its inode number) alive


class MappedFile:
    """One file, mapped read-only and kept mapped between scrapes. While it is, its
    inode cannot be reused, so the same (device, inode) at the same path means the
    same file; a directory emptied and refilled by restarted workers with the same
    pids (as in a restarted container) shows new inodes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data, self.identity = _map(path)

    def is_current(self) -> bool:
        """Whether the path still names this file, at least as long as the mapping
        (FileNotFoundError when gone). prometheus_client only ever grows its files
        (its writers map them too); a file cut shorter under a mapping would make
        reading past its new end fatal (SIGBUS), so it is mapped again."""
        st = os.stat(self.path)
        return (st.st_dev, st.st_ino) == self.identity and st.st_size >= len(self.data)

    def used(self) -> int:
        """The bytes the writer has used, the mapping grown to cover them."""
        # 0: being created (zero-filled, header not written yet); empty, as
        # prometheus_client reads it.
        used: int = _INT.unpack_from(self.data, 0)[0] or _HEADER
        if used > len(self.data):  # the writer doubled the file since it was mapped
            data, identity = _map(self.path)
            if identity != self.identity:
                data.close()
                raise LayoutChanged(self.path)
            self.data.close()
            self.data = data
            used = _INT.unpack_from(self.data, 0)[0] or _HEADER
        if used < _HEADER or used > len(self.data):
            raise CorruptFile(f"says {used} bytes are used, has {len(self.data)}")
        return used

    def close(self) -> None:
        self.data.close()


class Layout:
    """Where the entries of one file are, and their keys in file order; unpacks the
    values (and, with ``stamps``, the timestamps) of every known entry at once.

    The file (``prometheus_client.mmap_dict.MmapedDict``) is a 4-byte count of
    the bytes used, 4 bytes of padding, then entries: a 4-byte key length, the
    UTF-8 key padded with spaces so that the value starts 8-byte aligned, the
    value and a timestamp (doubles, native byte order). The key is
    ``json.dumps([metric, sample name, {label: value}, help], sort_keys=True)``.
    Entries are only appended and never move, so the layout learnt at one scrape
    still holds at the next: a struct compiled for it unpacks every value in one
    C call, and only the entries appended since are parsed in Python.
    """

    def __init__(self, *, stamps: bool) -> None:
        self.used = _HEADER
        self.keys: list[str] = []
        self._stamps = stamps
        self._pieces: list[str] = []
        self._chunks: list[tuple[int, struct.Struct]] = []  # (byte offset, struct)
        self._edges: list[tuple[int, bytes]] = []  # first and last key: (offset, bytes)

    def extend(self, data: mmap.mmap, used: int) -> list[str]:
        """Parse the entries between the known end and ``used``; their keys."""
        pos = start = self.used
        last = (0, b"")
        pieces: list[str] = []
        new: list[str] = []
        value = "dd" if self._stamps else "d8x"
        while pos < used:
            length = _INT.unpack_from(data, pos)[0]
            padded = length + (8 - (length + 4) % 8)
            end = pos + 4 + padded + 16
            if length <= 0 or end > used:
                raise CorruptFile(f"an entry at byte {pos} runs past the used size {used}")
            encoded = data[pos + 4 : pos + 4 + length]
            new.append(encoded.decode("utf-8"))
            pieces.append(f"{4 + padded}x{value}")
            last = (pos + 4, encoded)
            if not self._edges:
                self._edges.append(last)
            pos = end
        if not new:
            return new
        self.keys += new
        self._pieces += pieces
        self._chunks.append((start, struct.Struct("=" + "".join(pieces))))
        if len(self._chunks) > _MAX_CHUNKS:
            self._chunks = [(_HEADER, struct.Struct("=" + "".join(self._pieces)))]
        self._edges[1:] = [last]
        self.used = used
        return new

    def unpack(self, data: mmap.mmap) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Values and timestamps (empty without ``stamps``) of the known entries."""
        if any(data[at : at + len(key)] != key for at, key in self._edges):
            raise LayoutChanged  # rewritten in place: not how prometheus_client writes
        if len(self._chunks) == 1:
            offset, chunk = self._chunks[0]
            fields = chunk.unpack_from(data, offset)
        else:
            fields = ()
            for offset, chunk in self._chunks:
                fields += chunk.unpack_from(data, offset)
        if self._stamps:
            return fields[0::2], fields[1::2]
        return fields, ()


def select_mmap_values() -> None:
    """Make the metrics created from now on keep their values in the multiprocess
    files. prometheus_client picks its value class once, when first imported, from
    PROMETHEUS_MULTIPROC_DIR; an app may import it before our entry point sets the
    variable, and every worker would then keep its counts in memory (empty scrapes).

    Gated on the attributes rather than on :data:`SUPPORTED`: without the switch
    the counts are lost for certain, and there is no public way to make it."""
    if not all(hasattr(values, name) for name in _VALUE_HOOKS):
        logger.warning(
            "prometheus-client %s has no values.ValueClass (taskiq-exporter supports %s): set "
            "PROMETHEUS_MULTIPROC_DIR before anything imports prometheus_client, or the "
            "workers' metrics stay in memory",
            installed_version(), SPECIFIER,
        )  # fmt: skip
        return
    if values.ValueClass is values.MutexValue:
        # Only while still in memory: a second mmap class would reopen the files.
        values.ValueClass = values.get_value_class()


class HistogramAdder:
    """Adds counts already bucketed to one histogram child, as many ``observe``
    calls would: the child keeps one value per bucket (not cumulative, +Inf last)
    in ``_buckets`` and the sum of the observations in ``_sum``."""

    __slots__ = ("_buckets", "_sum")

    def __init__(self, buckets: list[Any], total: Any) -> None:
        self._buckets = buckets
        self._sum = total

    def add(self, counts: Sequence[int], total: float) -> None:
        for bucket, count in zip(self._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        self._sum.inc(total)


def histogram_adder(child: Any, size: int, report: CompatReport) -> HistogramAdder | None:
    """The bulk writer of a histogram child with ``size`` buckets (+Inf included),
    or None where only the public ``child.observe`` may be used: a prometheus_client
    that :func:`check_compat` refused, or a child that does not look as expected."""
    if not report.ok:
        return None  # check_compat has said why
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if (
        isinstance(buckets, list)
        and len(buckets) == size
        and all(callable(getattr(b, "inc", None)) for b in buckets)
        and callable(getattr(total, "inc", None))
    ):
        return HistogramAdder(buckets, total)
    _unexpected_histogram(report.version)
    return None


@functools.cache
def _unexpected_histogram(version: str) -> None:
    logger.warning(
        "prometheus-client %s: a histogram has no _buckets/_sum as taskiq-exporter expects "
        "(supported: %s); histograms are updated with observe(), one call per value",
        version, SPECIFIER,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class CompatReport:
    """What :func:`check_compat` found: ``ok`` when the private paths may be used."""

    version: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def installed_version() -> str:
    try:
        return importlib.metadata.version("prometheus-client")
    except importlib.metadata.PackageNotFoundError:  # vendored or renamed
        return "unknown"


def in_range(version: str) -> bool:
    """Whether ``version`` is in :data:`SUPPORTED` (pre-releases count as their release)."""
    release = tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])
    return bool(release) and SUPPORTED[0] <= release < SUPPORTED[1]


def check_compat(version: str | None = None) -> CompatReport:
    """The start-up check: the installed prometheus_client (or ``version``, as if it
    were installed) is in :data:`SUPPORTED`, has the private attributes used here,
    and writes files that this module reads and merges as its own
    MultiProcessCollector does. Logs one warning when not."""
    version = installed_version() if version is None else version
    problems = []
    if not in_range(version):
        problems.append("not a version the tests have run against")
    missing = [name for name in _VALUE_HOOKS if not hasattr(values, name)]
    if missing:
        problems.append(f"prometheus_client.values has no {', '.join(missing)}")
    problem = _probe_files()
    if problem:
        problems.append(problem)
    report = CompatReport(version, tuple(problems))
    if problems:
        logger.warning(
            "prometheus-client %s is not supported by taskiq-exporter, which supports %s (%s): "
            "/metrics falls back to prometheus_client's MultiProcessCollector (slower) and the "
            "middleware to Histogram.observe",
            version, SPECIFIER, "; ".join(problems),
        )  # fmt: skip
    return report


@functools.cache
def installed_compat() -> CompatReport:
    """:func:`check_compat` of the installed prometheus_client, once per process
    (and so is its warning)."""
    return check_compat()


def _probe_files() -> str | None:
    """Files written by prometheus_client itself, read back by :class:`Layout`, then
    merged by exporter.metrics.merge and by MultiProcessCollector: the two merges
    must agree sample by sample, in order. What is wrong, or None."""
    try:
        from prometheus_client.mmap_dict import MmapedDict, mmap_key
        from prometheus_client.multiprocess import MultiProcessCollector

        # Here, not at the top: exporter.metrics.merge imports this module's reader.
        from exporter.metrics.merge import Merger

        with tempfile.TemporaryDirectory(prefix="taskiq-exporter-compat-") as directory:
            for pid in (1, 2):
                for kind, entries in _probe_entries(pid, mmap_key).items():
                    path = os.path.join(directory, f"{kind}_{pid}.db")
                    writer = MmapedDict(path)
                    for key, value, stamp in entries:
                        writer.write_value(key, value, stamp)
                    writer.close()
                    found = _read_back(path)
                    if found != entries:
                        return f"{kind}_{pid}.db reads back as {found}, not {entries}"
            merger = Merger(directory)
            ours = []
            for f in merger.merge():
                pairs = zip(f.keys, f.values, strict=True)
                samples = [(name, dict(labels), value) for (name, labels), value in pairs]
                ours.append((f.name, f.kind, f.help, samples))
            merger.close()
            paths = sorted(glob.glob(os.path.join(glob.escape(directory), "*.db")))
            theirs = [
                (m.name, m.type, m.documentation, [(s.name, s.labels, s.value) for s in m.samples])
                for m in MultiProcessCollector.merge(paths, accumulate=True)
            ]
    except Exception as exc:  # whatever broke, the answer is the same: unknown layout
        return f"its multiprocess files could not be written and read back ({exc!r})"
    for mine, stock in itertools.zip_longest(ours, theirs):
        if mine != stock:
            return f"MultiProcessCollector merges sample files as {stock}, not as {mine}"
    return None


def _read_back(path: str) -> list[tuple[str, float, float]]:
    mapped = MappedFile(path)
    try:
        layout = Layout(stamps=True)
        keys = layout.extend(mapped.data, mapped.used())
        return list(zip(keys, *layout.unpack(mapped.data), strict=True))
    finally:
        mapped.close()


def _probe_entries(
    pid: int, key: Callable[[str, str, list[str], list[str], str], str]
) -> dict[str, list[tuple[str, float, float]]]:
    """(key, value, timestamp) by file kind: a counter, a histogram with two label
    sets (the order of their samples), a livesum and a mostrecent gauge (timestamps)."""
    histogram = []
    for kind in ("a", "b"):
        histogram.append((key("probe_h", "probe_h_sum", ["kind"], [kind], "H."), 0.5 * pid, 0.0))
        for le in ("0.25", "+Inf"):
            labels = [kind, le]
            bucket = key("probe_h", "probe_h_bucket", ["kind", "le"], labels, "H.")
            histogram.append((bucket, float(pid), 0.0))
    return {
        "counter": [(key("probe_c", "probe_c_total", [], [], "C."), 2.0 * pid, 0.0)],
        "histogram": histogram,
        "gauge_livesum": [(key("probe_l", "probe_l", ["kind"], ["x"], "L."), float(pid), 0.0)],
        "gauge_mostrecent": [
            (key("probe_r", "probe_r", ["kind"], ["x"], "A longer help."), -pid / 2, 9.0 - pid)
        ],
    }
