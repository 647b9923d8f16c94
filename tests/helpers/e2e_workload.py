"""The end-to-end workload as a pure function of the task number ``i``.

Senders, the worker app, the tests and the throughput benchmark all derive from
it what task ``i`` is called, how long it sleeps and how each of its attempts
ends, so the expected database and metric totals can be computed exactly.
Per 100 tasks: 2 fail once and succeed on the retry, 2 fail all three attempts,
3 fail without a retry (5 of 100 end failed; 11 of 106 attempts fail).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

OK = "ok"
FLAKY = "flaky"  # fails its first attempt, succeeds on the retry
RETRIED = "retried"  # fails every attempt; retried until the retry count is spent
FATAL = "fatal"  # fails with an error the retry middleware does not retry

# SimpleRetryMiddleware(default_retry_count=3): three attempts in all.
RETRY_COUNT = 3
SUCCESS = "success"
FAILED = "failed"

_KINDS = {0: FLAKY, 50: FLAKY, 5: RETRIED, 55: RETRIED, 15: FATAL, 35: FATAL, 65: FATAL}
_OUTCOMES = {
    OK: (SUCCESS,),
    FLAKY: (FAILED, SUCCESS),
    RETRIED: (FAILED,) * RETRY_COUNT,
    FATAL: (FAILED,),
}


def kind(i: int) -> str:
    return _KINDS.get(i % 100, OK)


def outcomes(i: int) -> tuple[str, ...]:
    """The status of each attempt of task ``i``, in order."""
    return _OUTCOMES[kind(i)]


def task_name(i: int, names: int) -> str:
    # i // 7 spreads every kind over every name.
    return f"e2e:t{(i // 7) % names:03d}"


def sleep_ms(i: int) -> int:
    """0 for half the tasks, 1 to 20 ms for the others."""
    return (i * 13) % 21 if i % 2 else 0


@dataclass
class Totals:
    """What the log and the counters must hold after tasks ``start..stop`` ran."""

    attempts: int = 0
    statuses: Counter[tuple[str, str]] = field(default_factory=Counter)  # (name, status)
    retries: Counter[str] = field(default_factory=Counter)
    started: Counter[str] = field(default_factory=Counter)


def expected(start: int, stop: int, names: int) -> Totals:
    totals = Totals()
    for i in range(start, stop):
        name = task_name(i, names)
        ends = outcomes(i)
        totals.attempts += len(ends)
        totals.started[name] += len(ends)
        totals.retries[name] += len(ends) - 1
        for status in ends:
            totals.statuses[name, status] += 1
    return totals
