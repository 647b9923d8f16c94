"""PromQL building blocks: selectors, rates and quantiles, from the metric-name contract.

Dashboards filter every raw selector by the ``job``, ``instance`` and (for task
metrics) ``task_name`` variables; recording rules are pre-aggregated without
``instance`` and so take ``job`` and ``task_name`` only.
"""

from __future__ import annotations

from exporter.metrics import names as n

RATE_INTERVAL = "$__rate_interval"
JOB = 'job=~"$job"'
INSTANCE = 'instance=~"$instance"'
TASK = f'{n.LABEL_TASK_NAME}=~"$task_name"'

# Raw metrics that carry a task_name label (the task filter applies to them).
TASK_METRICS = frozenset(
    {
        n.TASKS_SENT,
        n.TASKS_STARTED,
        n.TASKS_COMPLETED,
        n.TASK_RETRIES,
        n.TASK_DURATION,
        n.TASK_QUEUE_WAIT,
        n.TASKS_IN_PROGRESS,
    }
)
COUNTERS = frozenset(
    {
        n.TASKS_SENT,
        n.TASKS_STARTED,
        n.TASKS_COMPLETED,
        n.TASK_RETRIES,
        n.LOG_ROWS_WRITTEN,
        n.LOG_ROWS_DROPPED,
        n.LOG_WRITE_ERRORS,
    }
)
HISTOGRAMS = frozenset({n.TASK_DURATION, n.TASK_QUEUE_WAIT, n.LOG_FLUSH_SECONDS})
GAUGES = frozenset(
    {n.TASKS_IN_PROGRESS, n.LOG_BUFFER_ROWS, n.TASKS_BY_STATUS, n.OLDEST_PENDING_AGE}
)


def exposed_names() -> frozenset[str]:
    """Every sample name the exporter exposes (counters with ``_total``,
    histograms with their ``_bucket``/``_sum``/``_count`` series)."""
    exposed = {n.total(c) for c in COUNTERS} | set(GAUGES)
    for h in HISTOGRAMS:
        exposed |= {f"{h}_bucket", f"{h}_sum", f"{h}_count"}
    return frozenset(exposed)


def base_name(sample: str) -> str:
    """The metric a sample name belongs to (``x_total`` -> ``x``, ``x_bucket`` -> ``x``)."""
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and sample[: -len(suffix)] in COUNTERS | HISTOGRAMS:
            return sample[: -len(suffix)]
    return sample


def selector(sample: str, *matchers: str) -> str:
    """A dashboard selector of a raw sample, with the variable matchers it needs."""
    needed = [JOB, INSTANCE]
    if base_name(sample) in TASK_METRICS:
        needed.append(TASK)
    return f"{sample}{{{', '.join([*needed, *matchers])}}}"


def recorded(record: str, *matchers: str) -> str:
    """A dashboard selector of a recording rule (aggregated without instance)."""
    return f"{record}{{{', '.join([JOB, TASK, *matchers])}}}"


def rate(sample: str, *matchers: str) -> str:
    return f"rate({selector(sample, *matchers)}[{RATE_INTERVAL}])"


def sum_rate(counter: str, *matchers: str, by: str = "") -> str:
    """``sum by (...) (rate(counter_total{...}[$__rate_interval]))``."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({rate(n.total(counter), *matchers)})"


def ratio(counter: str, numerator: str, *, by: str = "") -> str:
    """Share of a counter's rate whose matchers include ``numerator``."""
    return f"{sum_rate(counter, numerator, by=by)}\n/\n{sum_rate(counter, by=by)}"


def quantile(q: float, histogram: str, *, by: str = "") -> str:
    """The q-quantile of a histogram over ``$__rate_interval``."""
    grouping = ", ".join(["le", *([by] if by else [])])
    return f"histogram_quantile({q}, sum by ({grouping}) ({rate(f'{histogram}_bucket')}))"


def regex_escape(value: str) -> str:
    """Escape a literal for a PromQL regex matcher inside double quotes."""
    regex = "".join(f"\\{c}" if c in r"\.^$|?*+()[]{}" else c for c in value)
    return regex.replace("\\", "\\\\").replace('"', '\\"')
