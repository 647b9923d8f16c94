"""What several commands share: options (each also a TASKIQ_EXPORTER_* variable),
the metrics directory, and errors worded as one line with the fix."""

from __future__ import annotations

import argparse
import contextlib
import socket
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import make_url

from exporter.settings import DEFAULT_DATABASE_URL, DEFAULT_MULTIPROC_DIR, ExporterSettings
from exporter.store.engine import sqlite_file


class CliError(Exception):
    """A failure the user can fix: ``main`` prints the message as one line and
    exits with ``code`` (2 for usage errors, as argparse does)."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://user@host/db or sqlite:///file.sqlite3 (asyncpg and aiosqlite "
        f"are used; default: TASKIQ_EXPORTER_DATABASE_URL, else {DEFAULT_DATABASE_URL})",
    )


def positive(text: str) -> float:
    """An argparse type: a number above zero."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def settings_from(args: argparse.Namespace, *fields: str) -> ExporterSettings:
    """Settings from the environment, overridden by the flags that were given
    (each flag's destination is named like its setting)."""
    overrides: dict[str, Any] = {}
    for field in ("database_url", *fields):
        value = getattr(args, field, None)
        if value is not None:
            overrides[field] = value
    try:
        settings = ExporterSettings(**overrides)
    except ValidationError as exc:
        raise CliError(settings_message(exc, flags=overrides), code=2) from exc
    if settings.allowed_hosts is None:
        # A command serves the app on its own: it checks the Host header against the
        # loopback names and the address bound even when no more names are configured
        # (an application that embeds the service usually checks Host itself).
        settings = settings.model_copy(update={"allowed_hosts": ()})
    return settings


def settings_message(exc: ValidationError, *, flags: Iterable[str] = ()) -> str:
    """``invalid --port: ...; invalid TASKIQ_EXPORTER_BATCH_SIZE: ...`` (never the value:
    it may be a password)."""
    given = set(flags)
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "settings"
        source = (
            "--" + field.replace("_", "-") if field in given else f"TASKIQ_EXPORTER_{field.upper()}"
        )
        parts.append(f"invalid {source}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def multiproc_dir(settings: ExporterSettings) -> str:
    """Where worker processes write their metrics and the service sums them:
    --multiproc-dir, TASKIQ_EXPORTER_MULTIPROC_DIR, PROMETHEUS_MULTIPROC_DIR, else
    the one default both commands share."""
    from exporter.metrics.multiprocess import configured_dir

    return configured_dir(settings.multiproc_dir) or DEFAULT_MULTIPROC_DIR


def display_url(url: str) -> str:
    """The URL as it may be printed: with its password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def require_database(url: str) -> None:
    """Fail before a read opens (and so creates) a SQLite file that is not there."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise CliError(
            f"no database at {path} (run taskiq-exporter db upgrade --database-url "
            f"{display_url(url)} first)"
        )


def database_message(exc: BaseException, url: str) -> str:
    """One line for a database that cannot be reached or refused what was asked."""
    where = f"the database at {display_url(url)}"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot reach {where}: connection refused; is it running? check --database-url"
    if isinstance(exc, socket.gaierror):
        return f"cannot reach {where}: unknown host; check --database-url"
    if isinstance(exc, OSError):  # TimeoutError too
        reason = first_line(exc) or "timed out"
        return f"cannot reach {where}: {reason}; is it running? check --database-url"
    detail = first_line(getattr(exc, "orig", None) or exc)
    if "no such table" in detail or ("relation" in detail and "does not exist" in detail):
        return f"{where} has no exporter tables ({detail}): run taskiq-exporter db upgrade"
    if "unable to open database file" in detail:
        return f"cannot open {where}: {detail}; does its directory exist?"
    return f"{where} refused: {detail}; check --database-url"


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn the errors of an unreachable or refusing database into a :class:`CliError`."""
    import asyncpg
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except (DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise CliError(database_message(exc, url)) from exc


def first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
