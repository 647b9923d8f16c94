"""What the service's lifespan builds and its handlers share."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.registry import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from exporter.events import EventHub
from exporter.settings import ExporterSettings


@dataclass
class ServiceState:
    settings: ExporterSettings
    engine: AsyncEngine
    registry: CollectorRegistry
    hub: EventHub = field(default_factory=EventHub)


def get_state(conn: HTTPConnection) -> ServiceState:
    state: ServiceState = conn.app.state.exporter
    return state
