"""``exporter.app.create_app(settings)``: the service's public factory."""

from exporter.service.app import create_app

__all__ = ["create_app"]
