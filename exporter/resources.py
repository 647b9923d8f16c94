"""The files that ship inside the package: dashboards, rules, the Alertmanager
example and the runbook (``exporter/assets``), read through importlib.resources
so that they are found from a wheel as well as from a checkout."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

DASHBOARDS = "dashboards"
RULES = "prometheus/rules"
RULES_FILE = f"{RULES}/taskiq.rules.yml"
RULE_TESTS = "prometheus/tests"
ALERTMANAGER = "alertmanager/alertmanager.yml"
RUNBOOK = "runbook.md"


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
