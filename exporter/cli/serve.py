"""``taskiq-exporter serve``: /metrics, the history API and live events."""

from __future__ import annotations

import argparse
from typing import Any

from exporter.cli.options import add_database_url, settings_from


def register(sub: Any) -> None:
    parser = sub.add_parser("serve", help="serve /metrics, the JSON API and live events")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    add_database_url(parser)
    parser.add_argument(
        "--multiproc-dir",
        help="the workers' PROMETHEUS_MULTIPROC_DIR, summed into /metrics",
    )
    parser.add_argument("--api-token", help="require 'Authorization: Bearer TOKEN' on /api")
    parser.add_argument("--metrics-token", help="require a bearer token on /metrics")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, _extra: list[str]) -> int:
    import uvicorn

    from exporter.service.app import create_app

    settings = settings_from(args, "host", "port", "multiproc_dir", "api_token", "metrics_token")
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
    return 0
