"""What the dashboards show of each objective, recorded from the SLO file: the
objective itself, the error budget left over the compliance window and the burn
rate thresholds of the alerts. The objective series also tells the static alerts
of ``taskiq.rules.yml`` which tasks the burn-rate alerts cover."""

from __future__ import annotations

import textwrap

from prometheus_client.utils import floatToGoString

from exporter.slo.model import KINDS, Kind, SloFile, TaskSlo
from exporter.slo.recording import (
    BUDGET_REMAINING,
    BURN_THRESHOLD,
    OBJECTIVE,
    SLO,
    Rule,
    errors,
    events,
    matchers,
    owners,
    quoted,
)
from exporter.slo.windows import Profile

WINDOW = "window"  # the compliance window, on the objective series
THRESHOLD = "threshold_seconds"  # the latency bound, on the objective series


def _in(cfg: SloFile, entry: TaskSlo, kind: Kind) -> str:
    return ", ".join([f'{SLO}="{kind}"', *matchers(cfg, entry)])


def _labelled(expr: str, labels: dict[str, str]) -> str:
    for name, value in labels.items():
        inner = textwrap.indent(expr, "  ")
        expr = f'label_replace(\n{inner},\n  "{name}", {quoted(value)}, "", ""\n)'
    return expr


def _objective(cfg: SloFile, profile: Profile, kind: Kind) -> Rule:
    # The value of a constant per task: any series of the task will do, and the
    # longest events window exists as long as the task was scraped in it.
    source = events(profile.windows()[-1])
    branches = []
    for entry in owners(cfg, kind):
        labels = {WINDOW: entry.window}
        threshold = entry.threshold(kind)
        if threshold is not None:
            labels[THRESHOLD] = floatToGoString(threshold)
        value = f"0 * {source}{{{_in(cfg, entry, kind)}}} + {entry.objective(kind):g}"
        branches.append(_labelled(value, labels))
    return {"record": OBJECTIVE, "expr": "\nor\n".join(branches), "labels": {SLO: kind}}


def _remaining(cfg: SloFile, profile: Profile, kind: Kind) -> Rule:
    # The 5-minute rates read every 5 minutes cover the window without overlap:
    # their means are its events over its length, and their ratio the window's
    # error ratio weighted by events, from 8640 samples a series (30 days) rather
    # than every one, and at most 5 minutes behind.
    short = profile.windows()[0]
    step = profile.duration(short)
    branches = []
    for entry in owners(cfg, kind):
        where, rng = _in(cfg, entry, kind), profile.duration(entry.window)
        budget = 1 - entry.objective(kind)
        branches.append(
            f"1 - (\n  avg_over_time({errors(short)}{{{where}}}[{rng}:{step}])\n  /\n"
            f"  avg_over_time({events(short)}{{{where}}}[{rng}:{step}])\n) / {budget:.6g}"
        )
    return {"record": BUDGET_REMAINING, "expr": "\nor\n".join(branches), "labels": {SLO: kind}}


def _thresholds(cfg: SloFile, profile: Profile, kind: Kind) -> list[Rule]:
    rules = []
    for burn in profile.burn_windows:
        branches = [
            f"0 * {OBJECTIVE}{{{_in(cfg, entry, kind)}}} + {burn.factor(entry.window):g}"
            for entry in owners(cfg, kind)
        ]
        labels = {
            SLO: kind,
            "severity": burn.severity,
            "long_window": burn.long,
            "short_window": burn.short,
        }
        rules.append({"record": BURN_THRESHOLD, "expr": "\nor\n".join(branches), "labels": labels})
    return rules


def view_rules(cfg: SloFile, profile: Profile) -> list[Rule]:
    """The objective, the budget left and the burn thresholds per task and kind."""
    rules: list[Rule] = []
    for kind in KINDS:
        if owners(cfg, kind):
            rules += [_objective(cfg, profile, kind), _remaining(cfg, profile, kind)]
            rules += _thresholds(cfg, profile, kind)
    return rules
