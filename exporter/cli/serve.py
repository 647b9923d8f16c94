"""``taskiq-exporter serve``: /metrics, the history API and live events."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from typing import Any

from exporter.cli.options import (
    CliError,
    add_database_url,
    display_url,
    multiproc_dir,
    settings_from,
)
from exporter.metrics.multiprocess import ENV_VAR
from exporter.settings import (
    DEFAULT_MULTIPROC_DIR,
    GENERATE_HINT,
    MIN_TOKEN_LENGTH,
    TOKEN_FIELDS,
    ExporterSettings,
)

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    parser = sub.add_parser("serve", help="serve /metrics, the JSON API and live events")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port to listen on (default 8000)")
    add_database_url(parser)
    parser.add_argument(
        "--read-database-url",
        metavar="URL",
        help="a streaming replica of the PostgreSQL database for the API's reads (history, "
        "detail, summary, task names, event replay); the primary answers while it is down "
        "(default: TASKIQ_EXPORTER_READ_DATABASE_URL)",
    )
    parser.add_argument(
        "--broker",
        metavar="MODULE:BROKER",
        help="the taskiq broker whose queues /metrics reports (waiting messages, the "
        "oldest one's age, in flight, consumers), given as to `taskiq worker` "
        "(default: TASKIQ_EXPORTER_BROKER)",
    )
    parser.add_argument(
        "--multiproc-dir",
        metavar="DIR",
        help="the directory whose metrics files /metrics sums (default: "
        f"$TASKIQ_EXPORTER_MULTIPROC_DIR or ${ENV_VAR}, else "
        f"{DEFAULT_MULTIPROC_DIR}, where `taskiq-exporter worker` writes by default); a "
        f"producer that sends tasks with the middleware counts them there if started "
        f"with {ENV_VAR}=DIR",
    )
    # A token is read from the environment or a file: on the command line, `ps` and
    # the shell's history would show it. The old flags remain, to say so.
    parser.add_argument(
        "--api-token-file",
        metavar="PATH",
        help="a file holding the token that /api and the WebSocket require as 'Authorization: "
        "Bearer TOKEN' (or TASKIQ_EXPORTER_API_TOKEN, TASKIQ_EXPORTER_API_TOKEN_FILE)",
    )
    parser.add_argument(
        "--metrics-token-file",
        metavar="PATH",
        help="a file holding the token /metrics requires (or TASKIQ_EXPORTER_METRICS_TOKEN, "
        "TASKIQ_EXPORTER_METRICS_TOKEN_FILE)",
    )
    parser.add_argument("--api-token", metavar="TOKEN", help=argparse.SUPPRESS)
    parser.add_argument("--metrics-token", metavar="TOKEN", help=argparse.SUPPRESS)
    parser.add_argument(
        "--allowed-hosts",
        metavar="NAMES",
        help="comma-separated names requests may give in their Host header besides "
        "localhost, 127.0.0.1, ::1 and --host (TASKIQ_EXPORTER_ALLOWED_HOSTS); "
        "*.example.com for subdomains",
    )
    parser.add_argument(
        "--allowed-origins",
        metavar="ORIGINS",
        help="comma-separated origins (https://grafana.example.com) whose pages may open "
        "the WebSocket (TASKIQ_EXPORTER_ALLOWED_ORIGINS)",
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve the API without a token on an address other than loopback",
    )
    parser.set_defaults(run=run)


def is_loopback(host: str) -> bool:
    """``host`` reaches this machine only (a name other than localhost may resolve
    to anything: it is not)."""
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _refuse_tokens_in_argv(args: argparse.Namespace) -> None:
    for name in TOKEN_FIELDS:
        if getattr(args, name, None) is not None:
            flag, var = "--" + name.replace("_", "-"), f"TASKIQ_EXPORTER_{name.upper()}"
            raise CliError(
                f"{flag} is not accepted: a token on the command line shows in ps and in "
                f"the shell's history; set {var} or pass {flag}-file PATH",
                code=2,
            )


def _check_token_length(settings: ExporterSettings, args: argparse.Namespace) -> None:
    for name in settings.short_tokens():
        if getattr(args, f"{name}_file", None) is not None:
            source = f"--{name.replace('_', '-')}-file"
        elif getattr(settings, f"{name}_file") is not None:
            source = f"TASKIQ_EXPORTER_{name.upper()}_FILE"
        else:
            source = f"TASKIQ_EXPORTER_{name.upper()}"
        raise CliError(
            f"invalid {source}: a token must be at least {MIN_TOKEN_LENGTH} characters "
            f"({GENERATE_HINT})",
            code=2,
        )


def check_access(settings: ExporterSettings, args: argparse.Namespace) -> None:
    """Refuse what would expose the API (a short token; an open API on a network
    address unless asked for with --insecure-no-auth) and warn about the rest."""
    _check_token_length(settings, args)
    open_api = settings.api_token is None
    if open_api and not is_loopback(settings.host) and not args.insecure_no_auth:
        raise CliError(
            f"--host {settings.host} would serve the API without a token to the network: "
            "set TASKIQ_EXPORTER_API_TOKEN (or TASKIQ_EXPORTER_API_TOKEN_FILE) or pass "
            "--insecure-no-auth",
            code=2,
        )
    if open_api:
        logger.warning(
            "the API is open: whoever reaches %s:%s reads task arguments and tracebacks; "
            "set TASKIQ_EXPORTER_API_TOKEN (or TASKIQ_EXPORTER_API_TOKEN_FILE)",
            settings.host,
            settings.port,
        )
    if not is_loopback(settings.host) and not settings.allowed_hosts:
        logger.warning(
            "listening on %s: only requests for localhost, 127.0.0.1, ::1 or the address "
            "bound are served; add the names clients use (the address Prometheus scrapes, "
            "a DNS name) to TASKIQ_EXPORTER_ALLOWED_HOSTS",
            settings.host,
        )


INBOUND_FRAME_LIMIT = 16 * 1024


def _load_broker(settings: ExporterSettings) -> object | None:
    # Imported before the server starts: a wrong import string stops `serve` here.
    from exporter.brokers.select import load_broker

    if settings.broker is None:
        return None
    try:
        broker: object = load_broker(settings.broker)
    except ValueError as exc:
        raise CliError(f"invalid --broker: {exc}", code=2) from exc
    logger.info("reading the queues of %s", settings.broker)
    return broker


def run(args: argparse.Namespace, _extra: list[str]) -> int:
    import uvicorn

    from exporter.service.app import create_app
    from exporter.service.auth import hide_query_strings

    _refuse_tokens_in_argv(args)  # first: whatever else is wrong, this is worth saying
    settings = settings_from(
        args,
        "host",
        "port",
        "read_database_url",
        "broker",
        "multiproc_dir",
        "api_token_file",
        "metrics_token_file",
        "allowed_hosts",
        "allowed_origins",
    )
    check_access(settings, args)
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
    app = create_app(settings, broker=_load_broker(settings))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        # The event stream's clients send nothing meaningful: refuse big frames
        # before they are buffered (uvicorn's default is 16 MiB).
        ws_max_size=INBOUND_FRAME_LIMIT,
    )
    # After uvicorn has configured its loggers: its WebSocket lines carry ?token=.
    hide_query_strings()
    server = uvicorn.Server(config)
    server.run()
    # As uvicorn.run: 3 when it could not start (the port is taken), having said why.
    return 0 if server.started else 3
