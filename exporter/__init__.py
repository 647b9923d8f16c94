"""taskiq-exporter: Prometheus metrics and a durable execution log for TaskIQ."""

from exporter.middleware.monitoring import MonitoringMiddleware
from exporter.rows import TaskStatus
from exporter.settings import ExporterSettings

# The one source of the version: the build reads it (pyproject.toml), and so do
# `taskiq-exporter --version`, /healthz and taskiq_exporter_build_info.
__version__ = "0.2.0"

__all__ = ["ExporterSettings", "MonitoringMiddleware", "TaskStatus", "__version__"]
