"""The exporter's own health: is the execution log being written, and how fast."""

from __future__ import annotations

from dashboards import promql as q
from dashboards.panels import Cell, Query, timeseries
from exporter.metrics import names as n

ANY = (("green", None), ("red", 0.000001))  # red from the first occurrence


def cells() -> list[Cell]:
    """Writes, drops, errors, buffer and flush time of the log writers, per instance."""
    return [
        Cell(
            timeseries(
                "Log rows written and dropped",
                "Execution log rows written to and "
                "dropped before PostgreSQL, per second, by exporter instance.",
                "cps",
                [
                    Query(q.sum_rate(n.LOG_ROWS_WRITTEN, by="instance"), "written {{instance}}"),
                    Query(q.sum_rate(n.LOG_ROWS_DROPPED, by="instance"), "dropped {{instance}}"),
                ],
            ),
            8,
        ),
        Cell(
            timeseries(
                "Log write errors",
                "Failed batch writes per second (retried with "
                "backoff; rows are dropped only when the buffer fills).",
                "cps",
                [Query(q.sum_rate(n.LOG_WRITE_ERRORS, by="instance"), "{{instance}}")],
                thresholds=ANY,
            ),
            8,
        ),
        Cell(
            timeseries(
                "Log buffer",
                "Rows waiting in the writers' buffers to be written; "
                "rows are dropped when a buffer is full.",
                "short",
                [
                    Query(
                        f"sum by (instance) ({q.selector(n.LOG_BUFFER_ROWS)})",
                        "buffered rows {{instance}}",
                    )
                ],
            ),
            4,
        ),
        Cell(
            timeseries(
                "Log flush p95",
                "p95 time to write one batch of log rows.",
                "s",
                [Query(q.quantile(0.95, n.LOG_FLUSH_SECONDS, by="instance"), "{{instance}}")],
            ),
            4,
        ),
    ]
