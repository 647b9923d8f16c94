"""The SLO file: per task (or group of tasks) objectives over a compliance window.

.. code-block:: yaml

    slos:
      - task_name: app.tasks:send_email        # or task_name_regex: "app\\.tasks:report_.*"
        success: 0.99                          # final outcomes
        latency: {threshold_seconds: 5.0, objective: 0.95}
        window: 30d

A task matches the entry that names it exactly, else the first entry whose regex
matches it; tasks no entry matches keep the static alerts of ``taskiq.rules.yml``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from exporter.metrics import names as n
from exporter.settings import DEFAULT_DURATION_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS

Kind = Literal["success", "latency", "queue_wait"]
Loc = tuple[str | int, ...]
KINDS: tuple[Kind, ...] = ("success", "latency", "queue_wait")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"([1-9][0-9]*)([smhdw])")
# Prometheus matches regexes with RE2, which has no lookaround and no backreferences.
_NOT_RE2 = re.compile(r"\(\?[=!<]|\\[1-9]")
HISTOGRAM: dict[Kind, str] = {"latency": n.TASK_DURATION, "queue_wait": n.TASK_QUEUE_WAIT}
MIN_WINDOW = "7d"  # the ticket alerts look back 3 days: a shorter window is all alert


def seconds(duration: str) -> int:
    """Seconds in a simple Prometheus duration such as ``30d``."""
    match = _DURATION.fullmatch(duration)
    if match is None:
        raise ValueError(f"{duration!r} is not a duration: use <int>s|m|h|d|w, such as 30d")
    return int(match[1]) * _UNITS[match[2]]


Objective = Annotated[float, Field(gt=0, lt=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Strict):
    """The share of attempts that must finish within ``threshold_seconds``, one
    of the histogram's bucket bounds (Prometheus only counts up to a bound)."""

    threshold_seconds: float = Field(gt=0)
    objective: Objective


class TaskSlo(_Strict):
    """The objectives of one task, or of every task ``task_name_regex`` matches."""

    task_name: str | None = Field(None, min_length=1)
    task_name_regex: str | None = Field(None, min_length=1)
    # The share of tasks whose final outcome is success: an attempt a retry
    # middleware re-kicks is not a failure, one that exhausts its retries is.
    success: Objective | None = None
    latency: Threshold | None = None  # wall time of an attempt
    queue_wait: Threshold | None = None  # from send to start of an attempt
    window: str = "30d"
    # The low-traffic guard: no alert unless the alert's long window holds at
    # least this many bad events (final failures, or slow attempts).
    min_errors: int = Field(3, ge=1)

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if seconds(value) < seconds(MIN_WINDOW):
            raise ValueError(f"{value} is shorter than {MIN_WINDOW}, the shortest window allowed")
        return value

    @field_validator("task_name_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if _NOT_RE2.search(value):
            raise ValueError("Prometheus regexes (RE2) have no lookaround or backreference")
        return value

    @model_validator(mode="after")
    def _one_name_some_objective(self) -> TaskSlo:
        if (self.task_name is None) == (self.task_name_regex is None):
            raise ValueError("give either task_name or task_name_regex")
        if not self.kinds():
            raise ValueError("give at least one objective: success, latency or queue_wait")
        return self

    @property
    def who(self) -> str:
        """How the entry names its tasks, for messages."""
        return self.task_name or f"/{self.task_name_regex}/"

    def kinds(self) -> tuple[Kind, ...]:
        return tuple(kind for kind in KINDS if getattr(self, kind) is not None)

    def objective(self, kind: Kind) -> float:
        value = getattr(self, kind)
        return float(value if isinstance(value, float) else value.objective)

    def threshold(self, kind: Kind) -> float | None:
        value = getattr(self, kind)
        return value.threshold_seconds if isinstance(value, Threshold) else None


class SloFile(_Strict):
    """The whole file. The bucket bounds default to the middleware's; set them
    here when the workers set ``duration_buckets``/``queue_wait_buckets``."""

    slos: list[TaskSlo] = Field(min_length=1)
    duration_buckets: tuple[float, ...] = DEFAULT_DURATION_BUCKETS
    queue_wait_buckets: tuple[float, ...] = DEFAULT_QUEUE_WAIT_BUCKETS

    def problems(self) -> list[tuple[Loc, str]]:
        """What the field validators cannot see: a task named twice, and a
        threshold that is not a bucket bound."""
        found: list[tuple[Loc, str]] = []
        seen: set[str] = set()
        for i, entry in enumerate(self.slos):
            field = "task_name" if entry.task_name is not None else "task_name_regex"
            if entry.who in seen:
                found.append((("slos", i, field), f"{entry.who} has an entry already: merge them"))
            seen.add(entry.who)
            for kind in ("latency", "queue_wait"):
                threshold = entry.threshold(kind)
                bounds = self.buckets(kind)
                if threshold is not None and threshold not in bounds:
                    found.append(
                        (
                            ("slos", i, kind, "threshold_seconds"),
                            f"{threshold:g}s is not a bucket bound of {HISTOGRAM[kind]}: "
                            f"use one of {', '.join(f'{b:g}' for b in bounds)} "
                            f"(or set {kind.replace('latency', 'duration')}_buckets "
                            "to the workers' own)",
                        )
                    )
        return found

    def buckets(self, kind: Kind) -> tuple[float, ...]:
        return self.duration_buckets if kind == "latency" else self.queue_wait_buckets
