"""``exporter.app``: the service's public factory, and the lifespan a host app
runs when it mounts the service."""

from exporter.service.app import create_app, lifespan_of

__all__ = ["create_app", "lifespan_of"]
