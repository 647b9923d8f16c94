"""The files that ship inside the package: dashboards, rules, the Alertmanager
example and the runbook (``exporter/assets``), read through importlib.resources
so that they are found from a wheel as well as from a checkout."""

from __future__ import annotations

import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from urllib.parse import urlsplit

DASHBOARDS = "dashboards"
RULES = "prometheus/rules"
RULES_FILE = f"{RULES}/taskiq.rules.yml"
RULE_TESTS = "prometheus/tests"
ALERTMANAGER = "alertmanager/alertmanager.yml"
RUNBOOK = "runbook.md"

# What the shipped rules are generated with (dashboards/config.py reads these):
# the scrape job of prometheus/prometheus.yml, the service's own GET /runbook and
# the Grafana that docker compose publishes, which the alerts' dashboard_url open.
DEFAULT_JOB = "taskiq-exporter"
DEFAULT_RUNBOOK_URL = "http://127.0.0.1:8000/runbook"
DEFAULT_GRAFANA_URL = "http://127.0.0.1:3000"

# A job name goes into PromQL string literals and a URL into plain YAML scalars:
# both are kept to characters that need no quoting in either.
_JOB = re.compile(r"[A-Za-z0-9_.:/@-]{1,200}")
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?&=%+@!$,;-]{1,2000}")


def asset(path: str) -> Traversable:
    """The shipped file or folder at ``path`` (``/``-separated, under ``assets``)."""
    node = files("exporter").joinpath("assets")
    for part in path.split("/"):
        node = node.joinpath(part)
    return node


def dashboards() -> dict[str, str]:
    """Every generated dashboard: file name -> JSON text."""
    return {
        item.name: item.read_text(encoding="utf-8")
        for item in sorted(asset(DASHBOARDS).iterdir(), key=lambda i: i.name)
        if item.name.endswith(".json")
    }


def text(path: str) -> str:
    return asset(path).read_text(encoding="utf-8")


def check_grafana_url(grafana_url: str) -> str:
    """``grafana_url`` as the alerts' links start with it (without a trailing ``/``),
    or a ValueError naming ``--grafana-url``."""
    parts = urlsplit(grafana_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            f"--grafana-url {grafana_url!r}: give an http(s) URL without a ?query or #fragment "
            "(each alert adds its dashboard's /d/... path)"
        )
    if not _URL_CHARS.fullmatch(grafana_url):
        raise ValueError(f"--grafana-url {grafana_url!r}: percent-encode spaces, quotes and #")
    return grafana_url.rstrip("/")


def rules_text(
    *,
    job: str = DEFAULT_JOB,
    runbook_url: str = DEFAULT_RUNBOOK_URL,
    grafana_url: str = DEFAULT_GRAFANA_URL,
) -> str:
    """The shipped rules file for scrape job ``job``, linking alerts to ``runbook_url``
    and to the dashboards of the Grafana at ``grafana_url``.

    The file is generated with the defaults; the three values appear in it only as
    ``job="..."`` selectors, ``runbook_url: <url>#<alert>`` and
    ``dashboard_url: <grafana>/d/...`` annotations, which are replaced here (a test
    compares the result with the generator's output).
    """
    if not _JOB.fullmatch(job):
        raise ValueError(
            f"--job {job!r}: use 1-200 letters, digits and _ . : / @ - (a Prometheus job name)"
        )
    parts = urlsplit(runbook_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        raise ValueError(
            f"--runbook-url {runbook_url!r}: give an http(s) URL without a #fragment "
            "(each alert adds its own #anchor)"
        )
    if not _URL_CHARS.fullmatch(runbook_url):
        raise ValueError(f"--runbook-url {runbook_url!r}: percent-encode spaces, quotes and #")
    grafana_url = check_grafana_url(grafana_url)
    content = text(RULES_FILE)
    content = content.replace(f'job="{DEFAULT_JOB}"', f'job="{job}"')
    content = content.replace(
        f"dashboard_url: {DEFAULT_GRAFANA_URL}/d/", f"dashboard_url: {grafana_url}/d/"
    )
    return content.replace(f"runbook_url: {DEFAULT_RUNBOOK_URL}#", f"runbook_url: {runbook_url}#")
