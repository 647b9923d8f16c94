"""``taskiq-exporter tail``: live task events in the terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from typing import Any
from urllib.parse import urlencode

COLOURS = {"pending": "\033[90m", "running": "\033[33m", "success": "\033[32m",
           "failed": "\033[31m"}  # fmt: skip
RESET = "\033[0m"


def register(sub: Any) -> None:
    parser = sub.add_parser("tail", help="print live task events from the service")
    parser.add_argument("--url", default="ws://127.0.0.1:8000", help="the service's base URL")
    parser.add_argument("--task-name", help="only this task")
    parser.add_argument("--status", help="only this status (pending, running, success, failed)")
    parser.add_argument("--token", help="API token (default: TASKIQ_EXPORTER_API_TOKEN)")
    parser.add_argument("--no-colour", action="store_true")
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


async def _tail(args: argparse.Namespace) -> None:
    import websockets

    query = {k: v for k, v in (("task_name", args.task_name), ("status", args.status)) if v}
    url = args.url.rstrip("/") + "/api/v1/monitoring/events"
    if query:
        url += "?" + urlencode(query)
    token = args.token or os.environ.get("TASKIQ_EXPORTER_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    colour = sys.stdout.isatty() and not args.no_colour
    async for ws in websockets.connect(url, additional_headers=headers):
        try:
            async for raw in ws:
                event = json.loads(raw)
                if event.get("type") == "task_event":
                    print(format_event(event, colour), flush=True)
        except websockets.ConnectionClosed:
            continue  # reconnect


def run(args: argparse.Namespace, _extra: list[str]) -> int:
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_tail(args))
    except BrokenPipeError:
        # `taskiq-exporter tail | head`: the reader left; leave quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
