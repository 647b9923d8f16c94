"""The shape of a merged scrape, in prometheus_client's order: which series make
each sample of each family (exporter.metrics.merge builds it, once per change of
the files' layouts, and fills it with values every scrape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate

from prometheus_client.utils import floatToGoString

Labels = tuple[tuple[str, str], ...]
SampleKey = tuple[str, Labels]  # (sample name, labels in prometheus_client's order)
_PID_KEPT = frozenset({"all", "liveall"})


@dataclass(frozen=True, slots=True)
class Series:
    metric: str
    name: str
    labels: Labels  # sorted, without le (histograms), with pid last (gauges)
    le: float | None


@dataclass(slots=True)
class Family:
    """One merged metric family: sample keys and their values, in the same order."""

    name: str
    kind: str
    help: str
    keys: list[SampleKey]
    values: list[float]
    summed: bool = True  # False: values copied from one process (may be -0.0)


@dataclass(slots=True)
class HistSet:
    """One label set of a histogram: its plain samples (_sum) and its buckets."""

    others: dict[str, int] = field(default_factory=dict)  # sample name -> slot
    buckets: dict[float, list[int]] = field(default_factory=dict)
    single: list[int] | None = None  # one slot per bucket, ascending le (the usual case)


@dataclass(slots=True)
class FamilyPlan:
    """Built from series ids with :meth:`add`, then :meth:`finish` turns them into
    slots of the merged values and fixes the sample keys."""

    name: str
    kind: str
    help: str
    mode: str = ""
    # Not histograms: labels -> sample name -> the slots summed or folded into it.
    simple: dict[Labels, dict[str, list[int]]] = field(default_factory=dict)
    sets: dict[Labels, HistSet] = field(default_factory=dict)
    with_others: dict[Labels, None] = field(default_factory=dict)  # first-seen order
    keys: list[SampleKey] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)  # not histograms: per key

    def add(self, sid: int, s: Series) -> None:
        if self.kind != "histogram":
            self.simple.setdefault(s.labels, {}).setdefault(s.name, []).append(sid)
            return
        hs = self.sets.setdefault(s.labels, HistSet())
        if s.le is None:
            hs.others.setdefault(s.name, sid)
            self.with_others.setdefault(s.labels)
        else:
            hs.buckets.setdefault(s.le, []).append(sid)

    def finish(self, slot: dict[int, int], le_text: dict[float, str]) -> None:
        if self.kind == "gauge" and self.mode not in _PID_KEPT:
            merged: dict[Labels, dict[str, list[int]]] = {}
            for labels, by_name in self.simple.items():
                target = merged.setdefault(tuple(i for i in labels if i[0] != "pid"), {})
                for name, sids in by_name.items():
                    target.setdefault(name, []).extend(sids)
            self.simple = merged
        if self.kind != "histogram":
            for labels, by_name in self.simple.items():
                for name, sids in by_name.items():
                    self.keys.append((name, labels))
                    self.groups.append([slot[s] for s in sids])
            return
        # prometheus_client's order since 0.24 (each label set's samples together; see
        # prometheus_compat): label sets with a _sum first, then those with buckets only.
        order = [*self.with_others, *(k for k in self.sets if k not in self.with_others)]
        self.sets = {labels: self.sets[labels] for labels in order}
        for labels, hs in self.sets.items():
            hs.others = {name: slot[sid] for name, sid in hs.others.items()}
            self.keys += [(name, labels) for name in hs.others]
            if not hs.buckets:
                continue
            hs.buckets = {le: [slot[s] for s in sids] for le, sids in sorted(hs.buckets.items())}
            if all(len(slots) == 1 for slots in hs.buckets.values()):
                hs.single = [slots[0] for slots in hs.buckets.values()]
            for le in hs.buckets:
                text = le_text.get(le)
                if text is None:
                    text = le_text[le] = floatToGoString(le)
                self.keys.append((f"{self.name}_bucket", (*labels, ("le", text))))
            self.keys.append((f"{self.name}_count", labels))

    def emit(self, acc: list[float], stamps: list[float]) -> Family:
        """The family's samples from the merged values (``acc``, by slot)."""
        if self.kind == "gauge":
            keys, values = [], []
            for key, slots in zip(self.keys, self.groups, strict=True):
                value = fold(self.mode, slots, acc, stamps)
                if value is not None:
                    keys.append(key)
                    values.append(value)
            summed = self.mode.removeprefix("live") == "sum"
            return Family(self.name, self.kind, self.help, keys, values, summed)
        if self.kind != "histogram":
            values = [sum_of(slots, acc) for slots in self.groups]
            return Family(self.name, self.kind, self.help, self.keys, values)
        values = []
        for hs in self.sets.values():
            values += [acc[s] for s in hs.others.values()]
            if hs.single is not None:
                cumulative = list(accumulate(map(acc.__getitem__, hs.single)))
            elif hs.buckets:
                cumulative = list(accumulate(sum_of(s, acc) for s in hs.buckets.values()))
            else:
                continue
            values += cumulative
            values.append(cumulative[-1])
        return Family(self.name, self.kind, self.help, self.keys, values)


def fold(mode: str, slots: list[int], acc: list[float], stamps: list[float]) -> float | None:
    """One gauge sample from the processes' values, as prometheus_client folds them."""
    base = mode.removeprefix("live")
    if base == "sum":
        total = 0.0  # from 0.0 as prometheus_client adds: a lone -0.0 becomes 0.0
        for s in slots:
            total += acc[s]
        return total
    if base in ("min", "max"):
        current = acc[slots[0]]
        for s in slots[1:]:
            value = acc[s]
            if (value < current) if base == "min" else (value > current):
                current = value
        return current
    if base == "mostrecent":
        found, newest = None, 0.0
        for s in slots:
            if newest < stamps[s]:
                found, newest = acc[s], stamps[s]
        return found
    return acc[slots[-1]]  # all / liveall: one process's value


def sum_of(slots: list[int], acc: list[float]) -> float:
    if len(slots) == 1:
        return acc[slots[0]]
    total = 0.0
    for s in slots:
        total += acc[s]
    return total
