"""Panel factories: every panel gets a title, a description, a unit and a
datasource variable by construction (the lint tests check the result anyway)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grafanalib import core as g

PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
POSTGRES = {"type": "grafana-postgresql-datasource", "uid": "${postgres}"}
Steps = Sequence[tuple[str, float | None]]  # (color, from value); the first starts at None
BASE: Steps = (("green", None),)


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Cell:
    """A panel and its size on the 24-column grid."""

    panel: g.Panel
    width: int = 12
    height: int = 8


def tile(panel: g.Panel) -> Cell:
    """A small cell, for the stat panels of a summary row."""
    return Cell(panel, 4, 4)


def _targets(queries: Sequence[Query], *, table: bool = False) -> list[g.Target]:
    return [
        g.Target(
            expr=q.expr,
            legendFormat=q.legend,
            refId=chr(ord("A") + i),
            instant=table,
            format="table" if table else "time_series",
            datasource=PROMETHEUS,
        )
        for i, q in enumerate(queries)
    ]


def _steps(steps: Steps) -> list[g.Threshold]:
    # grafanalib writes the first step's value as the string "null"; the
    # normaliser turns it into JSON null (Grafana 10/11 reject the string).
    return [g.Threshold(color, i, float(value or 0.0)) for i, (color, value) in enumerate(steps)]


def timeseries(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    thresholds: Steps = BASE,
    links: Sequence[dict[str, Any]] = (),
    max_value: int | None = None,
) -> g.TimeSeries:
    shown = len(thresholds) > 1
    return g.TimeSeries(
        title=title,
        description=description,
        unit=unit,
        dataSource=PROMETHEUS,
        targets=_targets(queries),
        thresholds=_steps(thresholds),
        thresholdsStyleMode="dashed" if shown else "off",
        valueMin=0,
        valueMax=max_value,
        fillOpacity=10,
        stacking={"mode": "none", "group": "A"},
        showPoints="never",
        legendDisplayMode="table",
        legendPlacement="right",
        legendCalcs=["lastNotNull", "max"],
        tooltipMode="multi",
        tooltipSort="desc",
        extraJson={"fieldConfig": {"defaults": {"links": list(links)}}} if links else None,
    )


def stat(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    thresholds: Steps = BASE,
    decimals: int | None = None,
) -> g.Stat:
    return g.Stat(
        title=title,
        description=description,
        format=unit,
        dataSource=PROMETHEUS,
        targets=_targets(queries),
        thresholds=_steps(thresholds),
        reduceCalc="lastNotNull",
        graphMode="area",
        colorMode="value",
        decimals=decimals,
        noValue="0",
    )


def prometheus_table(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    links: Mapping[str, Sequence[dict[str, Any]]] | None = None,
) -> g.Table:
    """An instant Prometheus table, one row per series; ``links`` per column."""
    overrides = [
        {
            "matcher": {"id": "byName", "options": column},
            "properties": [{"id": "links", "value": list(column_links)}],
        }
        for column, column_links in (links or {}).items()
    ]
    return g.Table(
        title=title,
        description=description,
        unit="none",
        dataSource=PROMETHEUS,
        targets=_targets(queries, table=True),
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
        overrides=overrides,
        thresholds=_steps(BASE),
    )


def _target(sql: str) -> g.SqlTarget:
    return g.SqlTarget(rawSql=sql, format="table", refId="A", datasource=POSTGRES)


def sql_table(
    title: str,
    description: str,
    sql: str,
    *,
    units: Mapping[str, str],
    links: Mapping[str, Sequence[dict[str, Any]]],
    hidden: Sequence[str] = (),
    page: bool = False,
    time_from: str | None = None,
    cell_colors: Mapping[str, Steps] | None = None,
) -> g.Table:
    """A PostgreSQL table panel; ``units`` and ``links`` are per column, ``hidden``
    columns stay in the data (data links read them) but are not shown; ``page``
    turns on Grafana's pagination; ``time_from`` is a relative time override."""
    properties: dict[str, list[dict[str, Any]]] = {}
    for column, unit in units.items():
        properties.setdefault(column, []).append({"id": "unit", "value": unit})
    for column, column_links in links.items():
        properties.setdefault(column, []).append({"id": "links", "value": list(column_links)})
    for column in hidden:
        properties.setdefault(column, []).append({"id": "custom.hidden", "value": True})
    for column, steps in (cell_colors or {}).items():
        properties.setdefault(column, []).extend(
            [
                {"id": "thresholds", "value": {"mode": "absolute", "steps": _json_steps(steps)}},
                {"id": "custom.cellOptions", "value": {"type": "color-text"}},
            ]
        )
    overrides = [
        {"matcher": {"id": "byName", "options": column}, "properties": props}
        for column, props in properties.items()
    ]
    # Long error messages wrap; a click on a cell shows the whole value (inspect).
    extra: dict[str, Any] = {
        "fieldConfig": {
            "defaults": {
                "custom": {"inspect": True, "cellOptions": {"type": "auto", "wrapText": True}}
            }
        },
        "options": {
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["count"], "enablePagination": page},
        },
    }
    return g.Table(
        title=title,
        description=description,
        unit="none",
        dataSource=POSTGRES,
        targets=[_target(sql)],
        overrides=overrides,
        filterable=True,
        thresholds=_steps(BASE),
        timeFrom=time_from,
        extraJson=extra,
    )


def _json_steps(steps: Steps) -> list[dict[str, Any]]:
    return [{"color": color, "value": value} for color, value in steps]


def sql_text(title: str, description: str, sql: str) -> g.Logs:
    """A PostgreSQL query whose first text column is shown as log lines: monospace,
    newlines kept, long lines wrapped (Grafana has no monospace table cell)."""
    return g.Logs(
        title=title,
        description=description,
        dataSource=POSTGRES,
        targets=[_target(sql)],
        showTime=False,
        wrapLogMessages=True,
        sortOrder="Ascending",
        enableLogDetails=False,
        extraJson={
            "fieldConfig": {
                "defaults": {
                    "unit": "none",
                    "thresholds": {"mode": "absolute", "steps": _json_steps(BASE)},
                }
            }
        },
    )


def layout(rows: Sequence[tuple[str, Sequence[Cell]]]) -> list[g.Panel]:
    """Rows of cells laid out left to right, wrapping at 24 columns; ids in order."""
    panels: list[g.Panel] = []
    y = 0
    for title, cells in rows:
        panels.append(g.RowPanel(title=title, gridPos=g.GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        x, row_height = 0, 0
        for cell in cells:
            if x + cell.width > 24:
                x, y, row_height = 0, y + row_height, 0
            cell.panel.gridPos = g.GridPos(h=cell.height, w=cell.width, x=x, y=y)
            panels.append(cell.panel)
            x += cell.width
            row_height = max(row_height, cell.height)
        y += row_height
    for panel_id, panel in enumerate(panels, start=1):
        panel.id = panel_id
    return panels
