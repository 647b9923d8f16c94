"""The alerting path as real processes: a Prometheus evaluating rules files and
sending its alerts to an Alertmanager, which delivers them to a webhook receiver
the test runs (an HTTP server in a thread that keeps every notification).

The Alertmanager runs the shipped ``alertmanager.yml`` with webhook URLs added
to its receivers and shorter waits (``TIMINGS``), nothing else changed:
:func:`unchanged_part` is what must stay equal to the shipped file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "exporter" / "assets" / "alertmanager" / "alertmanager.yml"
# Seconds instead of minutes and hours; the only change to the shipped routing.
TIMINGS = {"group_wait": "1s", "group_interval": "2s", "repeat_interval": "1h"}
UNREACHABLE = (httpx.HTTPError,)


def require_binary(*names: str) -> str:
    """The first of ``names`` on PATH: skipped without it, a failure when ``CI`` is set."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    what = f"{' or '.join(names)} (apt-get install prometheus prometheus-alertmanager)"
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required when CI is set")
    pytest.skip(f"{what} is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Delivered:
    """One alert of one notification, as the webhook received it."""

    at: float  # time.monotonic() on arrival
    receiver: str  # the Alertmanager receiver that sent it (the webhook's path)
    status: str  # of the alert: "firing" or "resolved"
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    group_labels: dict[str, str]  # of the notification: the route's group_by


class Webhook:
    """A webhook receiver on a loopback port: ``url(name)`` for each receiver."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delivered: list[Delivered] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook._keep(self.path.strip("/"), body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # no access log line on stderr per notification

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _keep(self, receiver: str, body: dict[str, Any]) -> None:
        now = time.monotonic()
        alerts = [
            Delivered(
                at=now,
                receiver=receiver,
                status=a["status"],
                labels=a["labels"],
                annotations=a["annotations"],
                fingerprint=a["fingerprint"],
                group_labels=body["groupLabels"],
            )
            for a in body["alerts"]
        ]
        with self._lock:
            self._delivered += alerts

    def url(self, receiver: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/{receiver}"

    def delivered(self, **labels: str) -> list[Delivered]:
        """Every alert received so far whose labels include ``labels``."""
        with self._lock:
            return [d for d in self._delivered if labels.items() <= d.labels.items()]

    def __enter__(self) -> Webhook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _timings(route: dict[str, Any], shorten: bool) -> dict[str, Any]:
    """``route`` and its children with their waits set to ``TIMINGS`` (or removed)."""
    route = {k: v for k, v in route.items() if k not in TIMINGS}
    if shorten:
        route.update(TIMINGS)
    if "routes" in route:
        route["routes"] = [_timings(child, shorten=False) for child in route["routes"]]
    return route


def unchanged_part(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` without what :func:`alertmanager_config` changes (the waits of
    the routes and the receivers' webhooks): the route tree, the grouping, the
    inhibit rules and whatever else decides who is notified of what."""
    receivers = [
        {k: v for k, v in receiver.items() if k != "webhook_configs"}
        for receiver in config["receivers"]
    ]
    return {**config, "route": _timings(config["route"], shorten=False), "receivers": receivers}


def alertmanager_config(webhooks: Mapping[str, str]) -> dict[str, Any]:
    """The shipped configuration, delivering the receivers ``webhooks`` names to
    their URL and waiting seconds instead of minutes."""
    config: dict[str, Any] = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    config["route"] = _timings(config["route"], shorten=True)
    names = {r["name"] for r in config["receivers"]}
    assert set(webhooks) <= names, f"{set(webhooks) - names} are not shipped receivers"
    for receiver in config["receivers"]:
        if receiver["name"] in webhooks:
            receiver["webhook_configs"] = [{"url": webhooks[receiver["name"]]}]
    return config


@contextmanager
def _running(args: list[str], log: Path, ready: str, what: str) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:

            def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"{what} exited:\n{log.read_text(errors='replace')}")
                return httpx.get(ready, timeout=2).status_code == 200

            wait_for(up, f"{what} to be ready", 60, ignoring=UNREACHABLE)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Alertmanager:
    """Its v2 API; :meth:`run` starts ``binary`` with ``config``."""

    def __init__(self, base: str) -> None:
        self.base = base

    @classmethod
    @contextmanager
    def run(cls, binary: str, config: Mapping[str, Any], tmp: Path) -> Iterator[Alertmanager]:
        port = free_port()
        path = tmp / "alertmanager.yml"
        path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
        args = [
            binary,
            f"--config.file={path}",
            f"--storage.path={tmp / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # a single instance: no gossip port
        ]
        base = f"http://127.0.0.1:{port}"
        with _running(args, tmp / "alertmanager.log", f"{base}/-/ready", "Alertmanager"):
            yield cls(base)

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """The alerts it holds (inhibited ones included) whose labels include ``labels``."""
        response = httpx.get(f"{self.base}/api/v2/alerts", timeout=5)
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()
        return [a for a in found if labels.items() <= a["labels"].items()]


class Prometheus:
    """Its HTTP API; :meth:`run` starts ``binary`` scraping ``target`` as ``job``,
    evaluates ``rule_files`` every second and sends its alerts to ``alertmanager``."""

    def __init__(self, base: str) -> None:
        self.base = base

    @classmethod
    @contextmanager
    def run(
        cls,
        binary: str,
        *,
        job: str,
        target: str,
        rule_files: list[Path],
        alertmanager: str,
        tmp: Path,
    ) -> Iterator[Prometheus]:
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}],
            },
        }
        path = tmp / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        args = [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        base = f"http://127.0.0.1:{port}"
        with _running(args, tmp / "prometheus.log", f"{base}/-/ready", "Prometheus"):
            yield cls(base)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: ``{"metric": labels, "value": [t, "v"]}`` each."""
        response = httpx.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=5)
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result
