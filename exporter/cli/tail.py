"""``taskiq-exporter tail``: live task events in the terminal.

After a dropped connection it reconnects with ``?since=`` the ``data.updated_at``
of the newest event shown; the service replays from there, inclusive, so the
events at that instant that were already shown are skipped (:class:`Cursor`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from exporter.cli.options import CliError, first_line

if TYPE_CHECKING:
    from websockets.exceptions import InvalidStatus

COLOURS = {"pending": "\033[90m", "running": "\033[33m", "success": "\033[32m",
           "failed": "\033[31m"}  # fmt: skip
RESET = "\033[0m"
PATH = "/api/v1/monitoring/events"
SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
BACKOFF_SECONDS = (0.5, 5.0)  # the first retry's delay, doubled up to the second


def register(sub: Any) -> None:
    parser = sub.add_parser("tail", help="print live task events from the service")
    parser.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="the service's base URL: http(s):// or ws(s):// (default http://127.0.0.1:8000)",
    )
    parser.add_argument("--task-name", metavar="NAME", help="only this task name")
    parser.add_argument("--status", help="only this status (pending, running, success, failed)")
    parser.add_argument("--token", help="the API token (default: TASKIQ_EXPORTER_API_TOKEN)")
    parser.add_argument("--no-colour", action="store_true", help="never colour the lines")
    parser.set_defaults(run=run)


def format_event(event: dict[str, Any], colour: bool) -> str:
    data = event.get("data") or {}
    status = str(event.get("status"))
    parts = [str(event.get("timestamp", ""))[11:23], f"{status:8}", str(event.get("task_name"))]
    parts.append(f"{data.get('task_id')}#{data.get('attempt')}")
    if data.get("duration_ms") is not None:
        parts.append(f"{data['duration_ms']:.1f} ms")
    if data.get("error_message"):
        parts.append(str(data["error_message"]))
    # Whatever a task put in its error message must not drive the operator's terminal.
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in "  ".join(parts))
    return f"{COLOURS.get(status, '')}{line}{RESET}" if colour else line


def events_url(base: str, **query: str | None) -> str:
    """The events endpoint under ``base`` (http(s):// becomes ws(s)://)."""
    scheme, sep, rest = base.partition("://")
    if not sep:
        scheme, rest = "ws", base
    if scheme.lower() not in SCHEMES:
        raise CliError(f"--url {base}: use http://, https://, ws:// or wss://", code=2)
    url = f"{SCHEMES[scheme.lower()]}://{rest.rstrip('/')}{PATH}"
    given = {k: v for k, v in query.items() if v}
    return f"{url}?{urlencode(given)}" if given else url


class Cursor:
    """Where to resume: the newest ``data.updated_at`` shown, and the events
    already shown at that instant (a replay from it sends them again)."""

    def __init__(self) -> None:
        self.since: str | None = None
        self._at: datetime | None = None
        self._shown: set[tuple[Any, ...]] = set()

    def is_new(self, event: dict[str, Any]) -> bool:
        """Whether to show ``event``; moves the cursor past it."""
        data = event.get("data") or {}
        stamp = data.get("updated_at")
        if not stamp:
            return True
        at = datetime.fromisoformat(stamp)
        key = (data.get("task_id"), data.get("attempt"), event.get("status"))
        if self._at is None or at > self._at:
            self.since, self._at, self._shown = stamp, at, {key}
        elif at == self._at:
            if key in self._shown:
                return False
            self._shown.add(key)
        return True  # older than the cursor: a live event that came late

    def rewind(self, stamp: str) -> None:
        """Resume from ``stamp`` (the service says what it could not send from there
        on): an event shown since may be shown again, none is lost."""
        self.since, self._at, self._shown = stamp, datetime.fromisoformat(stamp), set()


async def follow(
    url: str,
    *,
    token: str | None = None,
    task_name: str | None = None,
    status: str | None = None,
    backoff: tuple[float, float] = BACKOFF_SECONDS,
) -> AsyncIterator[dict[str, Any]]:
    """Task events from the service at ``url``, each once, across reconnects."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

    headers = {"Authorization": f"Bearer {token}"} if token else None
    cursor = Cursor()
    opened = False  # once the first connection opened, failures are retried
    announced = True  # "reconnecting..." said since the last connection opened
    delay = backoff[0]
    while True:
        endpoint = events_url(url, task_name=task_name, status=status, since=cursor.since)
        resume = False
        try:
            async with connect(endpoint, additional_headers=headers) as ws:
                opened, announced, delay = True, False, backoff[0]
                async for raw in ws:
                    event = json.loads(raw)
                    kind = event.get("type")
                    if kind == "task_event" and cursor.is_new(event):
                        yield event
                    elif kind in ("replay_truncated", "events_dropped"):
                        # Reconnect at once from the first event the service did not send.
                        cursor.rewind(event["resume_from"])
                        resume = True
                        break
                    elif kind == "replay_clamped":
                        print(f"taskiq-exporter tail: the service replays events since "
                              f"{event['since']} only; older ones are not shown",
                              file=sys.stderr)  # fmt: skip
        except ConnectionClosed:
            pass
        except InvalidURI as exc:
            raise CliError(f"--url {url}: {exc}", code=2) from exc
        except InvalidStatus as exc:
            if not opened or exc.response.status_code < 500:
                raise CliError(refusal(exc, url)) from exc
        except (OSError, InvalidHandshake) as exc:
            if not opened:
                raise CliError(f"cannot reach the service at {url}: {_reason(exc)}") from exc
        if resume:
            continue
        if not announced:
            print("taskiq-exporter tail: connection lost; reconnecting...", file=sys.stderr)
            announced = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, backoff[1])


def refusal(exc: InvalidStatus, url: str) -> str:
    """One line for a refused handshake."""
    code = exc.response.status_code
    if code in (401, 403):
        return "the service refused the token: set --token or TASKIQ_EXPORTER_API_TOKEN"
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return f"the service refused the request: {json.loads(exc.response.body)['error']}"
    return f"the service at {url} answered HTTP {code}; is --url its base URL?"


def _reason(exc: Exception) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused; is `taskiq-exporter serve` running? check --url"
    return f"{first_line(exc) or 'timed out'}; check --url"


async def _tail(args: argparse.Namespace) -> None:
    token = args.token or os.environ.get("TASKIQ_EXPORTER_API_TOKEN")
    colour = sys.stdout.isatty() and not args.no_colour
    events_url(args.url)  # a bad --url is a usage error, before any connection
    async for event in follow(args.url, token=token, task_name=args.task_name, status=args.status):
        print(format_event(event, colour), flush=True)


def run(args: argparse.Namespace, _extra: list[str]) -> int:
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_tail(args))
    except BrokenPipeError:
        # `taskiq-exporter tail | head`: the reader left; leave quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
