"""Panel factories: every panel gets a title, a description, a unit and a
datasource variable by construction (the lint tests check the result anyway)."""

from __future__ import annotations

from collections.abc import Sequence
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


def prometheus_table(title: str, description: str, queries: Sequence[Query]) -> g.Table:
    return g.Table(
        title=title,
        description=description,
        unit="none",
        dataSource=PROMETHEUS,
        targets=_targets(queries, table=True),
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
        thresholds=_steps(BASE),
    )


def sql_table(
    title: str,
    description: str,
    sql: str,
    *,
    units: dict[str, str],
    links: dict[str, dict[str, Any]],
) -> g.Table:
    """A PostgreSQL table panel; ``units`` and ``links`` are per column."""
    properties: dict[str, list[dict[str, Any]]] = {}
    for column, unit in units.items():
        properties.setdefault(column, []).append({"id": "unit", "value": unit})
    for column, link in links.items():
        properties.setdefault(column, []).append({"id": "links", "value": [link]})
    overrides = [
        {"matcher": {"id": "byName", "options": column}, "properties": props}
        for column, props in properties.items()
    ]
    return g.Table(
        title=title,
        description=description,
        unit="none",
        dataSource=POSTGRES,
        targets=[g.SqlTarget(rawSql=sql, format="table", refId="A", datasource=POSTGRES)],
        overrides=overrides,
        filterable=True,
        thresholds=_steps(BASE),
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
