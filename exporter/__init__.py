"""taskiq-exporter: Prometheus metrics and a durable execution log for TaskIQ."""

from exporter.middleware.monitoring import MonitoringMiddleware
from exporter.settings import ExporterSettings
from exporter.store.models import TaskStatus

__all__ = ["ExporterSettings", "MonitoringMiddleware", "TaskStatus"]
