"""``taskiq-exporter serve``: /metrics, the history API and live events."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from exporter.cli.options import add_database_url, display_url, multiproc_dir, settings_from
from exporter.metrics.multiprocess import ENV_VAR
from exporter.settings import DEFAULT_MULTIPROC_DIR

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    parser = sub.add_parser("serve", help="serve /metrics, the JSON API and live events")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port to listen on (default 8000)")
    add_database_url(parser)
    parser.add_argument(
        "--multiproc-dir",
        metavar="DIR",
        help="the directory whose metrics files /metrics sums (default: "
        f"$TASKIQ_EXPORTER_MULTIPROC_DIR or ${ENV_VAR}, else "
        f"{DEFAULT_MULTIPROC_DIR}, where `taskiq-exporter worker` writes by default); a "
        f"producer that sends tasks with the middleware counts them there if started "
        f"with {ENV_VAR}=DIR",
    )
    parser.add_argument(
        "--api-token", metavar="TOKEN", help="require 'Authorization: Bearer TOKEN' on /api"
    )
    parser.add_argument(
        "--metrics-token", metavar="TOKEN", help="require 'Authorization: Bearer TOKEN' on /metrics"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, _extra: list[str]) -> int:
    import uvicorn

    from exporter.service.app import create_app

    settings = settings_from(args, "host", "port", "multiproc_dir", "api_token", "metrics_token")
    directory = multiproc_dir(settings)
    settings = settings.model_copy(update={"multiproc_dir": directory})
    logger.info(
        "summing the metrics files in %s; a producer process (one that sends tasks with "
        "the middleware) counts its sent tasks there when started with %s=%s",
        directory,
        ENV_VAR,
        directory,
    )
    # The service opens the store without creating it, and says in its log (and its
    # 503 answers) what is missing and how to fix it: a missing database is not fatal.
    logger.info("execution log: %s", display_url(settings.database_url))
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
    return 0
