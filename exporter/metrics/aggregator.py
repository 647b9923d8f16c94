"""Per-process tallies applied to the Prometheus instruments in bulk.

Every prometheus_client call costs a lock and, in multiprocess mode, an mmap
write: paid per task, it was most of a middleware's overhead. The hooks count
into plain Python objects instead and the writer's loop applies the deltas
about once a second (and at shutdown), so a scrape is at most that stale.
Histogram observations go further: the hooks append the raw value to a list
and the buckets are found in bulk when the tallies are applied (sorted once,
then one bisect per bound, instead of a bisect per value on the task's path;
prometheus_client declines a bulk observe: client_python#733). Adding the bucketed counts uses a
histogram's private values (exporter.metrics.prometheus_compat); where that
module refuses the installed prometheus_client, each value is observed instead.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from exporter.metrics.instruments import Instruments
from exporter.metrics.prometheus_compat import (
    CompatReport,
    HistogramAdder,
    histogram_adder,
    installed_compat,
)
from exporter.text import clean_text


class HistogramTally:
    """The observations of one histogram child since the last apply."""

    __slots__ = ("adder", "bounds", "child", "counts", "pending", "total")

    def __init__(self, bounds: tuple[float, ...], child: Any, report: CompatReport) -> None:
        self.bounds = (*bounds, float("inf"))
        self.child = child
        # None: no bulk path for this prometheus_client; fold() observes one by one.
        self.adder: HistogramAdder | None = histogram_adder(child, len(self.bounds), report)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        # Observations not bucketed yet: the hooks append to this list.
        self.pending: list[float] = []

    def observe(self, value: float) -> None:
        """One observation (the hooks append to ``pending`` directly)."""
        self.pending.append(value)

    def fold(self) -> None:
        """Bucket the pending observations: sorted once, then one bisect per bound
        (cheaper than a bisect per value once there are more values than bounds)."""
        pending = self.pending
        if not pending:
            return
        if self.adder is None:  # the public API: the counts could not be added later
            for value in pending:
                self.child.observe(value)
            pending.clear()
            return
        values = sorted(pending)
        counts = self.counts
        below = 0
        for i, bound in enumerate(self.bounds):  # a bucket counts values <= its bound
            upto = bisect_right(values, bound)
            counts[i] += upto - below
            below = upto
        self.total += sum(pending)
        pending.clear()  # the same list: the hooks reach it through the tally

    def apply(self) -> None:
        """Add the tallied observations to the histogram child."""
        self.fold()
        if self.adder is None or not any(self.counts):
            return
        self.adder.add(self.counts, self.total)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0


class TaskTally:
    """What happened to one task name since the last apply."""

    __slots__ = (
        "children",
        "duration_failed",
        "duration_success",
        "failed",
        "failed_durations",
        "in_progress",
        "in_progress_applied",
        "ok_durations",
        "queue_wait",
        "retries",
        "sent",
        "started",
        "success",
        "waits",
    )

    def __init__(self, inst: Instruments, task_name: str, report: CompatReport) -> None:
        self.sent = self.started = self.success = self.failed = self.retries = 0
        self.in_progress = self.in_progress_applied = 0
        # Creating the children now makes every series exist at 0 from first sight.
        self.children = (
            inst.sent.labels(task_name),
            inst.started.labels(task_name),
            inst.completed.labels(task_name, "success"),
            inst.completed.labels(task_name, "failed"),
            inst.retries.labels(task_name),
            inst.in_progress.labels(task_name),
            inst.duration.labels(task_name, "success"),
            inst.duration.labels(task_name, "failed"),
            inst.queue_wait.labels(task_name),
        )
        self.children[5].set(0)
        dur_ok, dur_failed, wait = self.children[6:]
        self.duration_success = HistogramTally(inst.duration_bounds, dur_ok, report)
        self.duration_failed = HistogramTally(inst.duration_bounds, dur_failed, report)
        self.queue_wait = HistogramTally(inst.queue_wait_bounds, wait, report)
        # The histograms' pending lists, one attribute away from the hooks.
        self.ok_durations = self.duration_success.pending
        self.failed_durations = self.duration_failed.pending
        self.waits = self.queue_wait.pending

    @property
    def duration(self) -> dict[str, HistogramTally]:
        """The duration tallies by status."""
        return {"success": self.duration_success, "failed": self.duration_failed}

    def fold(self) -> None:
        self.duration_success.fold()
        self.duration_failed.fold()
        self.queue_wait.fold()

    def apply(self) -> None:
        sent, started, ok, failed, retries, in_progress = self.children[:6]
        for child, attr in (
            (sent, "sent"),
            (started, "started"),
            (ok, "success"),
            (failed, "failed"),
            (retries, "retries"),
        ):
            value = getattr(self, attr)
            if value:
                child.inc(value)
                setattr(self, attr, 0)
        if self.in_progress != self.in_progress_applied:  # a multiprocess set is an mmap write
            in_progress.set(self.in_progress)
            self.in_progress_applied = self.in_progress
        self.duration_success.apply()
        self.duration_failed.apply()
        self.queue_wait.apply()


class Aggregator:
    """The tallies of every task name seen by this process."""

    def __init__(self, instruments: Instruments, *, compat: CompatReport | None = None) -> None:
        self.instruments = instruments
        # Which prometheus_client paths are safe: the installed one's, unless given.
        self.compat = installed_compat() if compat is None else compat
        self.tasks: dict[str, TaskTally] = {}
        # The tallies of the attempts running now, one per attempt: when set,
        # apply() counts the in-progress gauge from it (the middleware's hooks
        # then need not keep a count on the task's path).
        self.running: Callable[[], Iterable[TaskTally]] | None = None

    def task(self, task_name: str) -> TaskTally:
        tally = self.tasks.get(task_name)
        if tally is None:
            # A name that is not valid UTF-8 would break every scrape: clean it once.
            tally = self.tasks[task_name] = TaskTally(
                self.instruments, clean_text(task_name), self.compat
            )
        return tally

    def apply(self) -> None:
        if self.running is not None:
            counts = Counter(self.running())
            for tally in self.tasks.values():
                tally.in_progress = counts.get(tally, 0)
        for tally in self.tasks.values():
            tally.apply()
