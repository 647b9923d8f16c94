"""Ten typical task types (email, reports, payments...), as a workload for the demo and tests.

Durations are scaled down (tens to hundreds of milliseconds) so the demo fills
the dashboards in minutes; failure shares are a few percent, one task retries.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask


class EmbeddingServiceError(RuntimeError):
    pass


@dataclass(frozen=True)
class TaskType:
    name: str
    min_ms: float
    max_ms: float
    failure_rate: float
    error: Callable[[], BaseException]
    weight: int
    retry: bool = False


TASK_TYPES = (
    TaskType("ingest_telegram_messages", 40, 400, 0.02,
             lambda: ConnectionError("telegram API: connection reset by peer"), 8),
    TaskType("embed_messages_batch", 80, 600, 0.04,
             lambda: EmbeddingServiceError("embedding service answered 503"), 6),
    TaskType("embed_atoms_batch", 60, 500, 0.05,
             lambda: EmbeddingServiceError("embedding service answered 429"), 4),
    TaskType("score_message", 5, 60, 0.03,
             lambda: ValueError("message has no text to score"), 20),
    TaskType("score_unscored_messages", 100, 900, 0.02,
             lambda: TimeoutError("scoring batch took longer than 30 s"), 2),
    TaskType("extract_knowledge_from_messages", 200, 1500, 0.08,
             lambda: TimeoutError("LLM request timed out"), 3, retry=True),
    TaskType("scheduled_knowledge_extraction", 50, 300, 0.01,
             lambda: RuntimeError("no messages since last run"), 1),
    TaskType("scheduled_auto_approval", 20, 200, 0.01,
             lambda: PermissionError("approver account is disabled"), 1),
    TaskType("scheduled_notification_alert", 10, 120, 0.02,
             lambda: ConnectionError("SMTP server refused the connection"), 1),
    TaskType("scheduled_daily_digest", 150, 1200, 0.03,
             lambda: KeyError("digest_template"), 1),
)  # fmt: skip


def _make(kind: TaskType, speed: float) -> Callable[..., Any]:
    async def run(batch_id: int, api_key: str = "", **options: Any) -> dict[str, Any]:
        await asyncio.sleep(random.uniform(kind.min_ms, kind.max_ms) / 1000.0 / speed)
        if random.random() < kind.failure_rate:
            raise kind.error()
        return {"batch_id": batch_id, "processed": random.randint(1, 500)}

    run.__name__ = kind.name
    return run


def register(
    broker: AsyncBroker, *, speed: float = 1.0
) -> dict[str, AsyncTaskiqDecoratedTask[Any, Any]]:
    """Register the ten tasks on ``broker`` (task names ``demo:<type>``)."""
    tasks: dict[str, AsyncTaskiqDecoratedTask[Any, Any]] = {}
    for kind in TASK_TYPES:
        labels: dict[str, Any] = {"retry_on_error": True, "max_retries": 3} if kind.retry else {}
        tasks[kind.name] = broker.register_task(
            _make(kind, speed), task_name=f"demo:{kind.name}", **labels
        )
    return tasks


async def send_random(tasks: dict[str, AsyncTaskiqDecoratedTask[Any, Any]], batch_id: int) -> None:
    """Send one task, chosen by weight, with arguments that include a secret."""
    kind = random.choices(TASK_TYPES, weights=[t.weight for t in TASK_TYPES])[0]
    await tasks[kind.name].kiq(
        batch_id, api_key="sk-demo-not-a-real-key", options={"chat_id": batch_id % 17}
    )
