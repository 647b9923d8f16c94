"""What one process of the middleware owns: registry, tallies, buffer, writer."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from prometheus_client.registry import CollectorRegistry

from exporter.events import EventHub
from exporter.metrics.aggregator import Aggregator
from exporter.metrics.instruments import Instruments
from exporter.metrics.multiprocess import configured_dir, enable_multiprocess, reap_dead_processes
from exporter.middleware.buffer import RowBuffer
from exporter.middleware.sanitize import ParamsEncoder
from exporter.middleware.writer import BackgroundWriter
from exporter.settings import ExporterSettings
from exporter.store.factory import open_row_store

logger = logging.getLogger(__name__)
REAP_EVERY_SECONDS = 15.0


class Runtime:
    def __init__(
        self,
        settings: ExporterSettings,
        *,
        hub: EventHub | None = None,
        before_flush: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        # The middleware's: buffers what its hooks leave for the writer's flush.
        self.before_flush = before_flush
        self.multiproc_dir = configured_dir(settings.multiproc_dir)
        if self.multiproc_dir:
            # Before any of our metrics exist: their values must go to the files.
            enable_multiprocess(self.multiproc_dir)
        self.registry = CollectorRegistry()
        self.instruments = Instruments(
            self.registry,
            duration_buckets=settings.duration_buckets,
            queue_wait_buckets=settings.queue_wait_buckets,
        )
        self.aggregator = Aggregator(self.instruments)
        self.buffer = RowBuffer.from_settings(settings)
        self.params = ParamsEncoder(
            secret_keys=settings.secret_keys, max_bytes=settings.max_params_bytes
        )
        self.writer: BackgroundWriter | None = None
        self._last_reap = 0.0

    async def start(self) -> None:
        if self.writer is not None:
            return
        s = self.settings
        if self.multiproc_dir:
            reap_dead_processes(self.multiproc_dir)
        store = await open_row_store(s.database_url, hub=self.hub)
        self.writer = BackgroundWriter(
            self.buffer,
            store,
            self.instruments,
            self.aggregator,
            flush_interval=s.flush_interval_seconds,
            batch_size=s.batch_size,
            metrics_interval=s.metrics_flush_interval_seconds,
            backoff_initial=s.retry_backoff_initial_seconds,
            backoff_max=s.retry_backoff_max_seconds,
            on_tick=self._tick,
            before_flush=self.before_flush,
        )
        self.writer.start()

    def _tick(self) -> None:
        # A sibling killed with SIGKILL leaves its live gauges behind: drop them.
        if self.multiproc_dir and time.monotonic() - self._last_reap > REAP_EVERY_SECONDS:
            self._last_reap = time.monotonic()
            reap_dead_processes(self.multiproc_dir)

    async def stop(self) -> None:
        writer, self.writer = self.writer, None
        if writer is None:
            self.aggregator.apply()
            return
        try:
            await writer.stop(self.settings.shutdown_flush_timeout_seconds)
        finally:
            await writer.store.close()
            if self.multiproc_dir:
                from prometheus_client.multiprocess import mark_process_dead

                mark_process_dead(os.getpid(), self.multiproc_dir)
