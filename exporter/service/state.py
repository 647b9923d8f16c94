"""What the service's lifespan builds and its handlers share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.registry import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from exporter.events import EventHub
from exporter.service.errors import ServiceUnavailable
from exporter.settings import ExporterSettings

if TYPE_CHECKING:  # both import this module (store_check for get_state, reads through it)
    from exporter.service.reads import Reads
    from exporter.service.store_check import StoreCheck

NOT_STARTED = (
    "the service's lifespan has not run: when mounting the app of create_app() in another "
    "application, enter exporter.service.app.lifespan_of(app) in the host's lifespan"
)


@dataclass
class ServiceState:
    settings: ExporterSettings
    engine: AsyncEngine  # the primary: writes, LISTEN/NOTIFY, maintenance, the store checks
    registry: CollectorRegistry
    store: StoreCheck
    reads: Reads  # the API's reads: the replica when one is set (exporter.service.reads)
    hub: EventHub = field(default_factory=EventHub)


def get_state(conn: HTTPConnection) -> ServiceState:
    """The lifespan's state; a 503 when the lifespan never ran (an app mounted in a
    host whose lifespan does not enter it)."""
    state: ServiceState | None = getattr(conn.app.state, "exporter", None)
    if state is None:
        raise ServiceUnavailable(NOT_STARTED)
    return state
