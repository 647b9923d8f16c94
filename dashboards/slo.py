"""Error-budget panels: what the SLO rules file records (``exporter/slo``) for the
tasks an SLO file gives an objective. Every query reads recorded series only, so
the panels follow the user's SLO file without regenerating the dashboards, and
stay empty for tasks without an objective."""

from __future__ import annotations

from collections.abc import Sequence

from grafanalib import core as g

from dashboards import promql as q
from dashboards.panels import PROMETHEUS, Cell, Query, stat, timeseries
from exporter.metrics import names as n
from exporter.slo import recording as slo
from exporter.slo.windows import DEFAULT_PROFILE

BUDGET_LEFT = "Error budget left"
BURN_RATE = "Burn rate"
# Red once the budget is spent, orange in its last quarter.
BUDGET_STEPS = (("red", None), ("orange", 0.0), ("green", 0.25))


def _long_windows() -> list[str]:
    return [b.long for b in DEFAULT_PROFILE.burn_windows]


def burn_rate(window: str) -> str:
    """Error ratio over ``window`` in units of the objective's budget (1 = on budget)."""
    ratio = q.recorded(slo.error_ratio(window))
    objective = q.recorded(slo.OBJECTIVE)
    return f"{ratio}\n/ on (job, {n.LABEL_TASK_NAME}, {slo.SLO})\n(1 - {objective})"


def _table(
    title: str, description: str, queries: Sequence[Query], renames: dict[str, str]
) -> g.Table:
    """An instant Prometheus table, one row per series, its queries merged by labels."""
    units = {"Budget left": "percentunit", "Objective": "percentunit"}
    overrides = [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": "unit", "value": units.get(name, "none")}],
        }
        for name in renames.values()
    ]
    return g.Table(
        title=title,
        description=description,
        unit="none",
        dataSource=PROMETHEUS,
        targets=[
            g.Target(
                expr=query.expr,
                legendFormat=query.legend,
                refId=chr(ord("A") + i),
                instant=True,
                format="table",
                datasource=PROMETHEUS,
            )
            for i, query in enumerate(queries)
        ],
        transformations=[
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True, "__name__": True},
                    "renameByName": renames,
                },
            },
        ],
        overrides=overrides,
        thresholds=[g.Threshold("green", 0, 0.0)],
    )


def _budget_stat() -> g.Stat:
    return stat(
        BUDGET_LEFT,
        "Share of the error budget left over the objective's compliance window "
        "(30 days unless the SLO file says otherwise), per objective: below 0 it is spent.",
        "percentunit",
        [Query(q.recorded(slo.BUDGET_REMAINING), "{{slo}}")],
        thresholds=BUDGET_STEPS,
        decimals=1,
    )


def _burn_panel() -> g.TimeSeries:
    return timeseries(
        BURN_RATE,
        "How fast each objective's budget burns, over the long windows of the alerts "
        "(1 = the budget lasts exactly the compliance window). For 30 days the alerts "
        "page at 14.4 over 1h or 6 over 6h, and open a ticket at 3 over 1d or 1 over 3d: "
        "see the thresholds table.",
        "short",
        [Query(burn_rate(w), f"{{{{slo}}}} {w}") for w in _long_windows()],
    )


def task_cells() -> list[Cell]:
    """The task detail dashboard's row: budget, burn rates, objectives and thresholds."""
    thresholds = _table(
        "Objectives and alert thresholds",
        "Per objective: the burn rate at which each alert fires, over its long and "
        "short windows, and the objective over its compliance window.",
        [
            Query(q.recorded(slo.BURN_THRESHOLD)),
            Query(q.recorded(slo.OBJECTIVE)),
        ],
        {"Value #A": "Burn rate threshold", "Value #B": "Objective"},
    )
    return [Cell(_budget_stat(), 6), Cell(_burn_panel(), 10), Cell(thresholds, 8)]


def overview_cells() -> list[Cell]:
    """The overview's compact table: every task with an objective."""
    table = _table(
        "Error budgets",
        "Tasks with an objective in the SLO file: the budget left over the compliance "
        "window and how fast it burns now (over 1h and 3d; 1 = on budget).",
        [
            Query(q.recorded(slo.BUDGET_REMAINING)),
            Query(burn_rate("1h")),
            Query(burn_rate("3d")),
        ],
        {"Value #A": "Budget left", "Value #B": "Burn rate 1h", "Value #C": "Burn rate 3d"},
    )
    return [Cell(table, 24, 8)]
