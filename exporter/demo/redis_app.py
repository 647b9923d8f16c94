"""The demo workload on Redis, for ``taskiq worker exporter.demo.redis_app:broker``.

This module is an entry point: taskiq's worker imports it and needs a broker at
module level, so it builds one from the environment when imported.
TASKIQ_EXPORTER_REDIS_URL (default redis://127.0.0.1:6379/0) and every
TASKIQ_EXPORTER_* setting apply.
"""

from __future__ import annotations

import os

from taskiq.middlewares import SimpleRetryMiddleware
from taskiq_redis import ListQueueBroker

from exporter import MonitoringMiddleware
from exporter.demo.tasks import register

REDIS_URL = os.environ.get("TASKIQ_EXPORTER_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("TASKIQ_EXPORTER_DEMO_QUEUE", "taskiq-exporter-demo")

# socket_timeout=None: redis-py's default read timeout (5 s) would end an idle
# worker's blocking BRPOP with an error and taskiq would restart the process.
broker = ListQueueBroker(REDIS_URL, queue_name=QUEUE, socket_timeout=None).with_middlewares(
    SimpleRetryMiddleware(default_retry_count=3),
    MonitoringMiddleware(),
)
tasks = register(broker, speed=float(os.environ.get("TASKIQ_EXPORTER_DEMO_SPEED", "1")))
