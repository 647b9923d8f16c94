"""Turn grafanalib 0.7.1's output into what Grafana 10/11 writes itself.

grafanalib targets schema version 12 and emits legacy shapes: the string
"null" as the first threshold value, Graphite/legacy target keys (``target``,
``metric``, ``step``, ``intervalFactor``), pre-v8 table keys (``columns``,
``styles``, ``fontSize``), row-era dashboard keys and many ``null`` options.
Each fix lives here, in the generator, so the committed JSON is never
edited by hand.
"""

from __future__ import annotations

import json
from typing import Any

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x
_DASHBOARD_LEGACY = {"rows", "hideControls", "sharedCrosshair", "style", "gnetId", "__inputs"}
_PANEL_LEGACY = {
    "span",
    "minSpan",
    "height",
    "error",
    "editable",
    "cacheTimeout",
    "columns",
    "styles",
    "fontSize",
    "mappings",
    "color",
    "hideTimeOverride",
    "repeatDirection",
    "maxPerRow",
    "maxDataPoints",
    "transparent",
}
_PROM_TARGET_KEYS = {"refId", "datasource", "expr", "legendFormat", "format", "instant", "hide"}
_SQL_TARGET_KEYS = {"refId", "datasource", "rawSql", "rawQuery", "format"}
_TEMPLATE_LEGACY = {"useTags", "tagsQuery", "tagValuesQuery", "auto", "auto_min", "auto_count"}

Json = dict[str, Any]


def _drop_nulls(value: Any) -> Any:
    """Remove ``null`` options recursively, except threshold values, where
    null means "from minus infinity" and is required."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None or k == "value"}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _steps(steps: list[Json]) -> list[Json]:
    return [
        {"color": s["color"], "value": None if s["value"] in ("null", None) else s["value"]}
        for s in steps
    ]


def _target(target: Json) -> Json:
    if target.get("rawSql"):
        clean = {k: v for k, v in target.items() if k in _SQL_TARGET_KEYS}
        return {**clean, "editorMode": "code"}
    clean = {k: v for k, v in target.items() if k in _PROM_TARGET_KEYS}
    if not clean.get("hide"):
        clean.pop("hide", None)
    # Grafana 10+ distinguishes range and instant queries explicitly.
    return {**clean, "range": not clean.get("instant", False), "editorMode": "code"}


def _panel(panel: Json) -> Json:
    panel = {k: v for k, v in panel.items() if k not in _PANEL_LEGACY}
    if panel.get("repeat") is None:
        panel.pop("repeat", None)
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    thresholds = defaults.get("thresholds")
    if thresholds is not None:
        thresholds["steps"] = _steps(thresholds["steps"])
    if panel["type"] == "stat" and not defaults.get("color"):
        defaults["color"] = {"mode": "thresholds"}
    if panel["type"] == "row":
        panel.pop("fieldConfig", None)
        panel.pop("targets", None)
        panel.pop("transformations", None)
        panel.pop("links", None)
    else:
        panel["targets"] = [_target(t) for t in panel.get("targets", [])]
    return panel


def _template(template: Json) -> Json:
    template = {k: v for k, v in template.items() if k not in _TEMPLATE_LEGACY}
    template["current"] = {}
    if template["type"] == "query":
        template["definition"] = template["query"]
        template["options"] = []
    if template["type"] == "textbox":
        template["current"] = {"text": template["query"], "value": template["query"]}
    if template["type"] == "custom" and template.get("includeAll"):
        template["current"] = {"text": ["All"], "value": ["$__all"]}
    return template


def normalize(dashboard: g.Dashboard) -> Json:
    """The dashboard as Grafana 10/11 JSON (a plain dict)."""
    data: Json = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
    data = {k: v for k, v in data.items() if k not in _DASHBOARD_LEGACY}
    data["schemaVersion"] = SCHEMA_VERSION
    data["timepicker"] = {"refresh_intervals": data["timepicker"]["refresh_intervals"]}
    data["panels"] = [_panel(p) for p in data["panels"]]
    data["templating"]["list"] = [_template(t) for t in data["templating"]["list"]]
    data["annotations"] = {
        "list": [
            {
                "builtIn": 1,
                "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            }
        ]
    }
    return _drop_nulls(data)  # type: ignore[no-any-return]


def to_json(dashboard: g.Dashboard) -> str:
    return json.dumps(normalize(dashboard), indent=2, sort_keys=True) + "\n"
