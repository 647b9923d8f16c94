"""Metric names and labels: a contract shared by the middleware, the service,
the dashboards and the alert rules. Rename here and everything follows."""

NAMESPACE = "taskiq"

# Labels: bounded by design. Never task_id, arguments or host names.
LABEL_TASK_NAME = "task_name"
LABEL_STATUS = "status"

# Task metrics (counter names without the _total suffix prometheus_client adds).
TASKS_SENT = "taskiq_tasks_sent"
TASKS_STARTED = "taskiq_tasks_started"
TASKS_COMPLETED = "taskiq_tasks_completed"
TASK_RETRIES = "taskiq_task_retries"
TASK_DURATION = "taskiq_task_duration_seconds"
TASK_QUEUE_WAIT = "taskiq_task_queue_wait_seconds"
TASKS_IN_PROGRESS = "taskiq_tasks_in_progress"

# The log writer's own health.
LOG_ROWS_WRITTEN = "taskiq_exporter_log_rows_written"
LOG_ROWS_DROPPED = "taskiq_exporter_log_rows_dropped"
LOG_TRACEBACKS_DROPPED = "taskiq_exporter_log_tracebacks_dropped"
LOG_WRITE_ERRORS = "taskiq_exporter_log_write_errors"
LOG_BUFFER_ROWS = "taskiq_exporter_log_buffer_rows"
LOG_FLUSH_SECONDS = "taskiq_exporter_log_flush_seconds"

# Gauges the service derives from the store at scrape time.
TASKS_BY_STATUS = "taskiq_tasks_by_status"
OLDEST_PENDING_AGE = "taskiq_oldest_pending_task_age_seconds"
STORE_UP = "taskiq_exporter_store_up"
BUILD_INFO = "taskiq_exporter_build_info"
# The read replica (TASKIQ_EXPORTER_READ_DATABASE_URL), exposed only when one is set.
REPLICA_UP = "taskiq_exporter_replica_up"
REPLICA_LAG = "taskiq_exporter_replica_lag_seconds"
STORE_READS = "taskiq_exporter_store_reads"  # the API's reads, by the database that answered
LABEL_DATABASE = "database"  # "primary" or "replica"
# 1 while /metrics falls back to prometheus_client's merge (metrics.prometheus_compat).
PROMETHEUS_CLIENT_FALLBACK = "taskiq_exporter_prometheus_client_fallback"

# The live events WebSocket, counted by the service (exporter.service.events_ws).
EVENTS_CONNECTIONS = "taskiq_exporter_events_connections"
EVENTS_CONNECTIONS_REFUSED = "taskiq_exporter_events_connections_refused"
EVENTS_DROPPED = "taskiq_exporter_events_dropped"
EVENTS_REPLAYS_TRUNCATED = "taskiq_exporter_events_replays_truncated"
LABEL_REASON = "reason"  # why a connection was refused: a fixed set of values

# The broker's queues, read by the service (serve --broker, exporter.brokers). Every
# replica exports the same values: aggregate with max by (queue), never sum.
QUEUE_MESSAGES = "taskiq_queue_messages"
QUEUE_OLDEST_AGE = "taskiq_queue_oldest_message_age_seconds"
QUEUE_IN_FLIGHT = "taskiq_queue_in_flight_messages"
QUEUE_CONSUMERS = "taskiq_queue_consumers"
QUEUE_INSPECTION_SUPPORTED = "taskiq_queue_inspection_supported"
QUEUE_INSPECTION_UP = "taskiq_queue_inspection_up"
LABEL_QUEUE = "queue"  # the broker's queue (list, stream, AMQP queue) names
LABEL_BROKER = "broker"  # the broker's class name

COMPLETED_STATUSES = ("success", "failed")


def total(name: str) -> str:
    """The exposed sample name of a counter."""
    return f"{name}_total"
