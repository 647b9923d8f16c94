"""The HTTP service: /metrics, health, the JSON API and live events."""
