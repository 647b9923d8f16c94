"""End to end on Redis: 20,000 tasks through `taskiq-exporter worker --workers 2`.

Mixed durations (0 to 20 ms), 5% of the tasks end failed, 4% are retried (see
e2e_workload); afterwards the log holds exactly one terminal row per attempt, the
scraped counters equal the log's totals and the history API returns every
failed attempt with its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.helpers import e2e_scenario
from tests.helpers import processes as p

TASKS = 20_000


def test_twenty_thousand_tasks_on_redis_lose_nothing(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    p.require_redis()
    e2e_scenario.run(
        database_url=pg_store,
        metrics_dir=tmp_path / "metrics",
        port=unused_port(),
        tasks=TASKS,
        broker="redis",
    )
