"""The SLIs as recording rules: bad events, all events and their ratio per task,
over every window the burn-rate alerts need, for each kind of objective.

Every series carries ``slo`` (success, latency or queue_wait), so that one record
name serves all three and a dashboard shows them side by side. Success counts
final outcomes on the metric contract as it stands: a retried attempt is counted
both failed and retried, so final failures = failed attempts - retries, and
events = completed attempts - retries (docs/slo.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from prometheus_client.utils import floatToGoString

from exporter.metrics import names as n
from exporter.slo.model import HISTOGRAM, KINDS, Kind, SloFile, TaskSlo
from exporter.slo.windows import Profile

Rule = dict[str, Any]
T = n.LABEL_TASK_NAME
SLO = "slo"  # the label naming the kind of objective
OBJECTIVE = f"{T}:{n.NAMESPACE}_slo_objective:ratio"
BUDGET_REMAINING = f"{T}:{n.NAMESPACE}_slo_error_budget:remaining"
BURN_THRESHOLD = f"{T}:{n.NAMESPACE}_slo_burn_rate:threshold"


def errors(window: str) -> str:
    """Bad events per second: final failures, or attempts slower than the threshold."""
    return f"{T}:{n.NAMESPACE}_slo_errors:rate{window}"


def events(window: str) -> str:
    return f"{T}:{n.NAMESPACE}_slo_events:rate{window}"


def error_ratio(window: str) -> str:
    return f"{T}:{n.NAMESPACE}_slo_errors:ratio_rate{window}"


def recorded_names(profile: Profile) -> frozenset[str]:
    per_window = {f(w) for w in profile.windows() for f in (errors, events, error_ratio)}
    return frozenset(per_window | {OBJECTIVE, BUDGET_REMAINING, BURN_THRESHOLD})


def quoted(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pattern(entry: TaskSlo) -> str:
    return re.escape(entry.task_name) if entry.task_name else f"(?:{entry.task_name_regex})"


def matchers(cfg: SloFile, entry: TaskSlo) -> list[str]:
    """The task_name matchers of the tasks ``entry`` owns: an exact name wins over
    any regex, and a regex over the regexes after it."""
    if entry.task_name is not None:
        return [f"{T}={quoted(entry.task_name)}"]
    index = cfg.slos.index(entry)
    before = [
        _pattern(other)
        for i, other in enumerate(cfg.slos)
        if other.task_name is not None or i < index
    ]
    own = [f"{T}=~{quoted(entry.task_name_regex or '')}"]
    return own + ([f"{T}!~{quoted('|'.join(before))}"] if before else [])


def owners(cfg: SloFile, kind: Kind) -> list[TaskSlo]:
    return [entry for entry in cfg.slos if kind in entry.kinds()]


def _any(entries: Sequence[TaskSlo]) -> str:
    """One matcher for every task of ``entries`` (recorded once, alerted per entry)."""
    return f"{T}=~{quoted('|'.join(_pattern(e) for e in entries))}"


def _sum(sample: str, labels: Sequence[str], window: str, *, drop: str = "instance") -> str:
    return f"sum without ({drop}) (rate({sample}{{{', '.join(labels)}}}[{window}]))"


def _success(job: str, entries: Sequence[TaskSlo], window: str) -> tuple[str, str]:
    who = [job, _any(entries)]
    completed, retries = n.total(n.TASKS_COMPLETED), n.total(n.TASK_RETRIES)
    status = f"instance, {n.LABEL_STATUS}"
    failed = _sum(completed, [*who, f'{n.LABEL_STATUS}="failed"'], window, drop=status)
    all_ = _sum(completed, who, window, drop=status)
    retried = _sum(retries, who, window)
    # A retry is counted when its attempt fails: rates over one window can still
    # differ by a sample, hence the clamp; `or` keeps a task whose retries series
    # is missing (an exporter that never saw a retry may not expose it).
    return (
        f"clamp_min(\n  {failed}\n  -\n  {retried},\n  0\n)\nor\n{failed}",
        f"clamp_min(\n  {all_}\n  -\n  {retried},\n  0\n)\nor\n{all_}",
    )


def _latency(cfg: SloFile, job: str, kind: Kind, window: str) -> tuple[str, str]:
    histogram, entries = HISTOGRAM[kind], owners(cfg, kind)
    drop = f"instance, {n.LABEL_STATUS}"  # a failed attempt is as slow as a success
    count = _sum(f"{histogram}_count", [job, _any(entries)], window, drop=drop)
    slow = []
    for entry in entries:  # one branch per entry: its own tasks, its own bound
        le = f'le="{floatToGoString(entry.threshold(kind) or 0.0)}"'
        own = [job, *matchers(cfg, entry)]
        fast = _sum(f"{histogram}_bucket", [*own, le], window, drop=f"{drop}, le")
        within = _sum(f"{histogram}_count", own, window, drop=drop)
        slow.append(f"clamp_min(\n  {within}\n  -\n  {fast},\n  0\n)")
    return "\nor\n".join(slow), count


def sli_rules(cfg: SloFile, profile: Profile, job: str) -> list[Rule]:
    """Bad events, events and their ratio, per kind and window (dependency order)."""
    rules: list[Rule] = []
    selector = f"job={quoted(job)}"
    for kind in KINDS:
        entries = owners(cfg, kind)
        if not entries:
            continue
        label = {SLO: kind}
        for window in profile.windows():
            rng = profile.duration(window)
            if kind == "success":
                bad, all_ = _success(selector, entries, rng)
            else:
                bad, all_ = _latency(cfg, selector, kind, rng)
            ratio = f'{errors(window)}{{{SLO}="{kind}"}}\n/\n{events(window)}{{{SLO}="{kind}"}}'
            rules += [
                {"record": errors(window), "expr": bad, "labels": label},
                {"record": events(window), "expr": all_, "labels": label},
                # 0/0 (no event in the window) is NaN: no ratio, so no alert.
                {"record": error_ratio(window), "expr": ratio, "labels": label},
            ]
    return rules
