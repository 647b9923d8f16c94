"""The generated dashboards: committed JSON current, the linter's rules hold, and the
linter itself catches each broken shape it is meant to catch."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from dashboards import history, links, overview, render, sql
from dashboards.common import (
    EXECUTION_UID,
    HISTORY_UID,
    OVERVIEW_UID,
    TASK_ALL_LITERAL,
    TASK_ALL_VALUE,
    TASK_DETAIL_UID,
)
from dashboards.config import DEFAULT, Config, FailureRateAlert, TaskThreshold
from dashboards.lint import lint, panels
from dashboards.normalize import normalize
from dashboards.promql import exposed_names
from dashboards.queries import (
    known_metrics,
    lint_all,
    panel_queries,
    sql_queries,
    sql_variable_queries,
    substitute,
    substitute_sql,
    task_metrics,
    variable_queries,
)
from dashboards.selectors import ScanError, selectors

Json = dict[str, Any]
SQL_VARS = ("task_name", "status", "error", "attempt")


def _overview() -> Json:
    return normalize(overview.build(DEFAULT).dashboard)


def _first(data: Json, kind: str) -> Json:
    return next(p for p in panels(data) if p["type"] == kind)


def test_committed_artefacts_match_the_generator() -> None:
    stale = [str(p.relative_to(render.ROOT)) for p in render.stale()]
    assert stale == [], f"run `python -m dashboards` and commit: {stale}"


def test_generated_dashboards_pass_every_lint_rule() -> None:
    assert [str(p) for p in lint_all()] == []


def _lint(data: Json) -> set[str]:
    return {p.rule for p in lint(data, known=known_metrics(), task_metrics=task_metrics())}


def _set_expr(expr: str) -> Callable[[Json], None]:
    def mutate(data: Json) -> None:
        _first(data, "timeseries")["targets"][0]["expr"] = expr

    return mutate


def _set(path: str, value: Any, kind: str = "timeseries") -> Callable[[Json], None]:
    def mutate(data: Json) -> None:
        *parents, last = path.split(".")
        node: Any = _first(data, kind)
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value

    return mutate


def _sql_target(data: Json) -> Json:
    return next(t for p in panels(data) for t in p["targets"] if "rawSql" in t)


def _template(name: str, key: str, value: Any) -> Callable[[Json], None]:
    def mutate(data: Json) -> None:
        next(t for t in data["templating"]["list"] if t["name"] == name)[key] = value

    return mutate


SEL = 'job=~"$job", instance=~"$instance", task_name=~"$task_name"'
BROKEN: list[tuple[str, Callable[[Json], None], str]] = [
    ("no description", _set("description", ""), "panel-title-description-rule"),
    ("no title", _set("title", ""), "panel-title-description-rule"),
    ("no unit", _set("fieldConfig.defaults.unit", ""), "panel-units-rule"),
    ("unknown unit", _set("fieldConfig.defaults.unit", "furlongs"), "panel-units-rule"),
    (
        "hard-coded uid",
        _set("datasource", {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}),
        "panel-datasource-rule",
    ),
    ("no targets", _set("targets", []), "panel-no-targets-rule"),
    (
        "hard-coded target uid",
        _set("targets.0.datasource", {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}),
        "datasource-uid-rule",
    ),
    ("datasource by name", _set("datasource", "Prometheus"), "datasource-uid-rule"),
    (
        "legacy null threshold",
        _set("fieldConfig.defaults.thresholds.steps", [{"color": "green", "value": "null"}]),
        "legacy-shape-rule",
    ),
    (
        "fixed rate range",
        _set_expr(f"rate(taskiq_tasks_sent_total{{{SEL}}}[5m])"),
        "target-rate-interval-rule",
    ),
    (
        "counter outside rate",
        _set_expr(f"sum(taskiq_tasks_sent_total{{{SEL}}})"),
        "target-counter-agg-rule",
    ),
    (
        "counter in delta",
        _set_expr(f"delta(taskiq_tasks_sent_total{{{SEL}}}[$__rate_interval])"),
        "target-counter-agg-rule",
    ),
    (
        "no job matcher",
        _set_expr('sum(taskiq_tasks_in_progress{instance=~"$instance", task_name=~"$task_name"})'),
        "target-job-rule",
    ),
    (
        "no instance matcher",
        _set_expr('sum(taskiq_tasks_in_progress{job=~"$job", task_name=~"$task_name"})'),
        "target-instance-rule",
    ),
    (
        "no task filter",
        _set_expr('sum(taskiq_tasks_in_progress{job=~"$job", instance=~"$instance"})'),
        "target-task-rule",
    ),
    (
        "renamed metric",
        _set_expr(f"sum(taskiq_tasks_running{{{SEL}}})"),
        "target-known-metric-rule",
    ),
    (
        "unbalanced",
        _set_expr(f"sum(rate(taskiq_tasks_sent_total{{{SEL}}}[$__rate_interval])"),
        "target-promql-rule",
    ),
    (
        "unindexed SQL",
        lambda d: _sql_target(d).update(rawSql="SELECT * FROM task_execution_logs"),
        "target-sql-rule",
    ),
    (
        "regex variable in SQL",
        lambda d: _sql_target(d).update(
            rawSql=_sql_target(d)["rawSql"] + "\n  AND task_name ~ '^(${task_name:regex})$'"
        ),
        "target-sql-variable-rule",
    ),
    (
        "SQL reads the log's params",
        lambda d: _sql_target(d).update(
            rawSql=_sql_target(d)["rawSql"].replace(sql.LOG_VIEW, "task_execution_logs")
        ),
        "target-sql-source-rule",
    ),
    ("task all value", _template("task_name", "allValue", ".+"), "template-task-rule"),
    ("job not multi", _template("job", "multi", False), "template-job-rule"),
    ("instance all value", _template("instance", "allValue", None), "template-instance-rule"),
    (
        "no reload on time change",
        _template("task_name", "refresh", 1),
        "template-on-time-change-reload-rule",
    ),
    ("datasource variable", _template("datasource", "query", "loki"), "template-datasource-rule"),
    ("legacy schema", lambda d: d.update(schemaVersion=12, rows=[]), "dashboard-schema-rule"),
    ("duplicate id", lambda d: d["panels"][2].update(id=d["panels"][1]["id"]), "panel-layout-rule"),
]


def test_the_unbroken_dashboard_is_clean() -> None:
    assert _lint(_overview()) == set()


@pytest.mark.parametrize(
    ("mutate", "rule"), [(m, r) for _, m, r in BROKEN], ids=[name for name, _, _ in BROKEN]
)
def test_linter_catches_a_broken_panel(mutate: Callable[[Json], None], rule: str) -> None:
    data = copy.deepcopy(_overview())
    mutate(data)
    assert rule in _lint(data)


def test_linter_reports_every_problem_of_a_deliberately_broken_panel() -> None:
    data = _overview()
    data["panels"].append(
        {
            "id": 999,
            "type": "timeseries",
            "title": "Broken",
            "gridPos": {"x": 0, "y": 999, "w": 24, "h": 1},
            "datasource": {"type": "prometheus", "uid": "abc123"},
            "fieldConfig": {
                "defaults": {"thresholds": {"steps": [{"color": "red", "value": "null"}]}}
            },
            "targets": [
                {
                    "refId": "A",
                    "datasource": {"uid": "abc123"},
                    "expr": "sum(taskiq_tasks_sent_total) / rate(taskiq_tasks_started_total[5m])",
                }
            ],
        }
    )
    assert _lint(data) >= {
        "panel-title-description-rule",
        "panel-units-rule",
        "panel-datasource-rule",
        "legacy-shape-rule",
        "target-counter-agg-rule",
        "target-rate-interval-rule",
        "target-job-rule",
        "target-instance-rule",
        "target-task-rule",
    }


def test_no_metric_name_is_written_as_a_literal_in_the_generator() -> None:
    source = "\n".join(p.read_text() for p in (render.ROOT / "dashboards").glob("*.py"))
    assert re.findall(r"taskiq_[a-z_]+", source) == []


def test_every_exported_metric_is_on_a_dashboard() -> None:
    used = {s.name for q in panel_queries() for s in selectors(q.expr)}
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in exposed_names()}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert families - shown == set()


def test_no_legacy_shapes_reach_the_json() -> None:
    for path in render.DASHBOARDS_DIR.glob("*.json"):
        text = path.read_text()
        data = json.loads(text)
        assert '"null"' not in text
        assert data["schemaVersion"] >= 36
        assert "rows" not in data
        for panel in panels(data):
            for target in panel["targets"]:
                assert {"target", "metric", "step", "intervalFactor"}.isdisjoint(target)
            steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert steps[0]["value"] is None
            assert all(s["value"] is not None for s in steps[1:])


def test_thresholds_come_from_the_one_config() -> None:
    cfg = Config(
        failure_rate_critical=FailureRateAlert(
            severity="critical",
            threshold=TaskThreshold(0.4),
            window="10m",
            min_completions=30,
            for_="5m",
        )
    )
    data = normalize(overview.build(cfg).dashboard)
    panel = next(p for p in panels(data) if p["title"] == "Failure ratio as the alerts see it")
    assert [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [
        None,
        0.05,
        0.4,
    ]
    assert "ratio_rate10m" in panel["targets"][0]["expr"]
    assert lint_all(cfg) == []


def test_panel_queries_cover_every_prometheus_target() -> None:
    queries = panel_queries()
    targets = sum(
        1
        for b in render.boards().values()
        for p in panels(normalize(b.dashboard))
        for t in p["targets"]
        if "expr" in t
    )
    assert len(queries) == targets
    assert [q.panel for q in queries if q.alert_only] == [overview.FIRING_ALERTS]
    assert "$" not in substitute(queries[0].expr)


@pytest.mark.parametrize("expr", ["sum(", "rate(x[5m]))", 'x{a="b" c="d"}', "x # y"])
def test_scanner_rejects_what_it_cannot_place(expr: str) -> None:
    with pytest.raises(ScanError):
        selectors(expr)


def test_scanner_finds_selectors_ranges_and_calls() -> None:
    found = selectors(
        'sum by (le) (rate(a_bucket{job=~"$j"}[$__rate_interval])) '
        "/ on (job) group_left b offset 5m"
    )
    assert [(s.name, s.range, s.call) for s in found] == [
        ("a_bucket", "$__rate_interval", "rate"),
        ("b", None, None),
    ]
    assert found[0].matcher("job") == ("=~", "$j")


def test_every_panel_query_parses(tmp_path: Path) -> None:
    """promtool parses PromQL as Prometheus does: each query as a recording rule."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (apt-get install prometheus)")
        pytest.skip("promtool is not installed")
    rules = [
        {"record": f"panel:query:{i}", "expr": substitute(q.expr)}
        for i, q in enumerate(panel_queries())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", "--lint=none", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_variable_queries_are_found_for_the_prometheus_dashboards() -> None:
    found = {(v.dashboard, v.variable, v.label) for v in variable_queries()}
    for uid in (OVERVIEW_UID, TASK_DETAIL_UID):
        assert {(uid, "job", "job"), (uid, "instance", "instance")} <= found
        assert (uid, "task_name", "task_name") in found
    assert {v.dashboard for v in variable_queries()} == {OVERVIEW_UID, TASK_DETAIL_UID}
    assert [(q.dashboard, q.panel) for q in sql_variable_queries()] == [
        (HISTORY_UID, "variable task_name")
    ]


def test_panels_the_runbook_names_exist() -> None:
    titles = {p["title"] for b in render.boards().values() for p in panels(normalize(b.dashboard))}
    runbook = (render.ASSETS / "runbook.md").read_text()
    items = re.split(r"\n(?=\d\. )|\n\n", runbook)
    named = [t for item in items if "*TaskIQ " in item for t in re.findall(r'"([^"]+)"', item)]
    assert len(named) >= 10
    assert set(named) - titles == set()


SQL_PANELS = {
    (OVERVIEW_UID, "Recent failures"),
    (TASK_DETAIL_UID, "Recent executions"),
    (HISTORY_UID, "Task health"),
    (HISTORY_UID, "Executions"),
    (HISTORY_UID, "Live activity"),
    (EXECUTION_UID, "Attempt"),
    (EXECUTION_UID, "Traceback"),
    (EXECUTION_UID, "Params"),
    (EXECUTION_UID, "Attempts of this task id"),
}
START, END = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00.25Z"


def test_sql_panels_substitute_every_grafana_macro() -> None:
    queries = [*sql_queries(), *sql_variable_queries()]
    assert {(q.dashboard, q.panel) for q in sql_queries()} == SQL_PANELS
    for q in queries:
        for names in (None, ["app:a", "o'brien"]):
            got = substitute_sql(q.sql, start=START, end=END, task_names=names)
            assert "$" not in got
            assert "[[" not in got
            between = "created_at BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-02T00:00:00.25Z'"
            bounds = ("'2026-01-01T00:00:00Z'::timestamptz", "'2026-01-02T00:00:00.25Z'")
            assert between in got or all(b in got for b in bounds), q.panel
        if "${task_name:sqlstring}" in q.sql:
            assert "task_name IN ('app:a','o''brien')" in substitute_sql(
                q.sql, start=START, end=END, task_names=["app:a", "o'brien"]
            )


COMMITTED_SQL = [
    (path.name, panel["title"], target["rawSql"])
    for path in sorted(render.DASHBOARDS_DIR.glob("*.json"))
    for panel in panels(json.loads(path.read_text()))
    for target in panel["targets"]
    if "rawSql" in target
]


@pytest.mark.parametrize(
    ("raw"), [r for *_, r in COMMITTED_SQL], ids=[f"{f}:{t}" for f, t, _ in COMMITTED_SQL]
)
def test_committed_sql_puts_variables_in_only_as_sqlstring(raw: str) -> None:
    """Grafana's sqlstring quotes each value and doubles its quotes; nothing else
    it offers escapes a quote ($var, ${var}, ${var:regex}, [[var]])."""
    refs = sql.references(raw)
    assert {r.text for r in refs if not r.builtin} <= {f"${{{v}:sqlstring}}" for v in SQL_VARS}
    # Without the scanner too: every "$" starts a macro call or a sqlstring variable.
    assert re.findall(rf"\$(?!__\w+\(|\{{({'|'.join(SQL_VARS)}):sqlstring\}})", raw) == []
    assert "[[" not in raw
    assert sql.problems(raw) == []
    assert sql.relations(raw) <= sql.READER_RELATIONS


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("x IN ($task_name)", "$task_name: use ${task_name:sqlstring}"),
        ("x IN (${task_name})", "${task_name}: use ${task_name:sqlstring}"),
        ("x IN (${task_name:csv})", "${task_name:csv}: use ${task_name:sqlstring}"),
        ("x IN ([[task_name]])", "[[task_name]]: use ${task_name:sqlstring}"),
        ("x ~ '^(${task_name:regex})$'", "inside a string literal"),
        ("x = '${task_name:sqlstring}'", "inside a string literal"),
        ('SELECT 1 AS "${task_name:sqlstring}"', "inside a quoted identifier"),
        ("x -- ${task_name:sqlstring}\n", "inside a comment"),
        ("x = $q$${task_name:sqlstring}$q$", "inside a dollar-quoted string"),
    ],
)
def test_unsafe_sql_variables_are_found(raw: str, problem: str) -> None:
    assert any(problem in p for p in sql.problems(raw)), sql.problems(raw)


def test_grafana_macros_and_sqlstring_are_safe() -> None:
    raw = (
        "SELECT 'it''s $x' FROM t WHERE $__timeFilter(created_at) AND a > $__timeFrom() "
        "AND b IN (${task_name:sqlstring})"
    )
    assert sql.problems(raw) == ["$x inside a string literal: nothing escapes it there"]
    assert sql.problems(raw.replace("$x", "x")) == []


def test_the_task_all_value_reads_as_all_in_promql_and_in_sql() -> None:
    """Grafana inserts a custom all value unformatted into both languages."""
    for name in ("a", "app:task", "o'brien", "'", "x') OR true --"):
        assert re.fullmatch(TASK_ALL_VALUE, name), name  # Prometheus anchors its regexes
    assert f"'{TASK_ALL_LITERAL}'" == TASK_ALL_VALUE
    assert "'" not in TASK_ALL_LITERAL
    assert (
        sql.interpolate(
            "${task_name:sqlstring}", selected={"task_name": None}, all_values={"task_name": "'v'"}
        )
        == "'v'"
    )


def _view_columns(name: str) -> set[str]:
    grants = (render.ASSETS / "postgres" / "grants.sql").read_text()
    view = re.search(rf"CREATE VIEW {name} AS\s+SELECT(.*?)FROM task_execution_logs;", grants, re.S)
    assert view is not None
    return {c.strip() for c in view[1].split(",")}


def test_the_panels_read_the_views_that_grants_sql_gives_the_reader() -> None:
    columns = _view_columns(sql.LOG_VIEW)
    assert "params" not in columns
    assert "error_traceback" not in columns
    assert _view_columns(sql.DETAILS_VIEW) == {
        "id", "created_at", "task_id", "attempt", "params", "error_message", "error_traceback"
    }  # fmt: skip
    read = {q.panel: sql.relations(q.sql) for q in [*sql_queries(), *sql_variable_queries()]}
    assert all(r <= sql.READER_RELATIONS for r in read.values()), read
    # Params and tracebacks are read on the execution dashboard, nowhere else.
    assert {p for p, r in read.items() if sql.DETAILS_VIEW in r} == {"Traceback", "Params"}


def _committed() -> dict[str, Json]:
    loaded = (json.loads(p.read_text()) for p in render.DASHBOARDS_DIR.glob("*.json"))
    return {data["uid"]: data for data in loaded}


def _sample(url: str) -> str:
    """``url`` with Grafana's link variables filled in as a browser would see it."""
    url = re.sub(r"\$\{(\w+):queryparam\}", r"var-\1=v", url)
    url = url.replace("${__url_time_range}", "from=1&to=2")
    url = url.replace("${exporter_url}", "http://127.0.0.1:8000")
    return re.sub(r"\$\{[^}]+\}", "v", url)


def test_every_link_parses_to_a_provisioned_dashboard_with_its_variables() -> None:
    dashboards = _committed()
    assert set(dashboards) == {OVERVIEW_UID, TASK_DETAIL_UID, HISTORY_UID, EXECUTION_UID}
    names = {uid: links.variables(data) for uid, data in dashboards.items()}
    found = list(links.all_urls(dashboards))
    assert len(found) >= 20
    targets: dict[tuple[str, str], set[str]] = {}
    for item in found:
        parts = urlsplit(_sample(item.url))
        if item.url.startswith("${exporter_url}"):
            assert parts.path.startswith("/api/v1/monitoring/history"), item
            continue
        uid = parts.path.split("/")[2]
        assert parts.path == f"/d/{uid}/{uid}", item
        assert uid in dashboards, item
        query = parse_qs(parts.query)
        assert {"from", "to"} <= set(query), item
        wanted = {k.removeprefix("var-") for k in query if k.startswith("var-")}
        assert wanted <= names[uid], (item, wanted - names[uid])
        # What a link carries along exists where it starts too.
        carried = set(re.findall(r"\$\{(\w+):queryparam\}", item.url))
        assert carried <= names[item.dashboard], item
        targets.setdefault((item.dashboard, item.where), set()).add(uid)
    assert links.problems(dashboards) == []
    # Every row listing of the log leads to the execution dashboard.
    for where in [
        (OVERVIEW_UID, "Recent failures"),
        (TASK_DETAIL_UID, "Recent executions"),
        (HISTORY_UID, "Executions"),
        (HISTORY_UID, "Live activity"),
        (EXECUTION_UID, "Attempts of this task id"),
    ]:
        assert EXECUTION_UID in targets[where], where
    assert HISTORY_UID in targets[(OVERVIEW_UID, "Recent failures")]
    assert HISTORY_UID in targets[(OVERVIEW_UID, overview.FIRING_ALERTS)]
    assert {HISTORY_UID, TASK_DETAIL_UID} <= targets[(EXECUTION_UID, "Attempt")]
    assert TASK_DETAIL_UID in targets[(OVERVIEW_UID, "Failures by task")]


def _break_link(uid: str, title: str, old: str, new: str) -> Callable[[dict[str, Json]], None]:
    def mutate(dashboards: dict[str, Json]) -> None:
        panel = next(p for p in panels(dashboards[uid]) if p["title"] == title)
        text = json.dumps(panel)
        assert old in text
        panel.clear()
        panel.update(json.loads(text.replace(old, new)))

    return mutate


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (_break_link(OVERVIEW_UID, "Recent failures", "/d/taskiq-execution/", "/d/nope/"),
         "no provisioned dashboard"),
        (_break_link(OVERVIEW_UID, "Recent failures", "var-attempt=", "var-attempt_id="),
         "has no variable 'attempt_id'"),
        (_break_link(HISTORY_UID, "Executions", "${postgres:queryparam}", "${job:queryparam}"),
         "the dashboard has no variable 'job'"),
        (_break_link(HISTORY_UID, "Executions", "__data.fields.range_from", "__data.fields.x"),
         "no column 'x'"),
        (_break_link(EXECUTION_UID, "Attempts of this task id", "&from=${__data.fields.range_from}",
                     ""), "no time range"),
        (_break_link(HISTORY_UID, "Task health", "${__url_time_range}", "${url_time_range}"),
         "no time range"),
    ],
)  # fmt: skip
def test_link_check_catches_a_broken_link(
    mutate: Callable[[dict[str, Json]], None], problem: str
) -> None:
    dashboards = _committed()
    mutate(dashboards)
    assert any(problem in p for p in links.problems(dashboards)), links.problems(dashboards)


def _history() -> Json:
    return normalize(history.build(DEFAULT).dashboard)


def _set_sql(title: str, old: str, new: str) -> Callable[[Json], None]:
    def mutate(data: Json) -> None:
        panel = next(p for p in panels(data) if p["title"] == title)
        assert old in panel["targets"][0]["rawSql"]
        panel["targets"][0]["rawSql"] = panel["targets"][0]["rawSql"].replace(old, new)

    return mutate


def _set_variable_sql(old: str, new: str) -> Callable[[Json], None]:
    def mutate(data: Json) -> None:
        t = next(t for t in data["templating"]["list"] if t["name"] == "task_name")
        t["query"] = t["query"].replace(old, new)

    return mutate


@pytest.mark.parametrize(
    ("mutate", "rule"),
    [
        (_set_sql("Executions", "LIMIT 500", "LIMIT 5000"), "target-sql-rule"),
        (_set_sql("Executions", "LIMIT 500", ""), "target-sql-rule"),
        (_set_sql("Executions", "$__timeFilter(created_at)", "true"), "target-sql-rule"),
        (_set_sql("Task health", "$__timeTo()", "now()"), "target-sql-rule"),
        (_set_sql("Task health", "status IN ('pending', 'running')", "true"), "target-sql-rule"),
        (_set_sql("Executions", "${error:sqlstring}", "'${error}'"), "target-sql-variable-rule"),
        (_set_sql("Executions", "${attempt:sqlstring}", "${attempt}"), "target-sql-variable-rule"),
        (_set_variable_sql("task_execution_logs_redacted", "task_execution_logs"),
         "target-sql-source-rule"),
        (_set_variable_sql("${__never}", ""), "template-task-rule"),
    ],
)  # fmt: skip
def test_linter_catches_broken_sql_of_the_history_dashboard(
    mutate: Callable[[Json], None], rule: str
) -> None:
    data = copy.deepcopy(_history())
    assert _lint(data) == set()
    if rule == "template-task-rule":
        next(t for t in data["templating"]["list"] if t["name"] == "task_name")["allValue"] = ""
    else:
        mutate(data)
    assert rule in _lint(data)


def test_the_history_dashboard_is_live_paged_and_bounded() -> None:
    data = _committed()[HISTORY_UID]
    assert data["refresh"] == "5s"
    by_title = {p["title"]: p for p in panels(data)}
    table = by_title["Executions"]
    assert table["options"]["footer"]["enablePagination"] is True
    assert "at most 500" in table["description"]
    assert table["targets"][0]["rawSql"].endswith("LIMIT 500")
    live = by_title["Live activity"]
    assert live["timeFrom"] == "24h"
    assert live["targets"][0]["rawSql"].endswith("LIMIT 50")
    assert "ORDER BY updated_at DESC" in live["targets"][0]["rawSql"]
    status = next(t for t in data["templating"]["list"] if t["name"] == "status")
    assert [o["value"] for o in status["options"]] == ["pending", "running", "success", "failed"]
    assert status["current"] == {"text": ["All"], "value": ["$__all"]}
    assert "allValue" not in status  # "All" is every status, quoted
    boxes = {t["name"]: t for t in data["templating"]["list"] if t["type"] == "textbox"}
    assert set(boxes) == {"error", "attempt", "exporter_url"}
    assert boxes["error"]["current"] == {"text": "", "value": ""}


def test_the_execution_dashboard_shows_text_in_monospace_wrapped_panels() -> None:
    by_title = {p["title"]: p for p in panels(_committed()[EXECUTION_UID])}
    for title in ("Traceback", "Params"):
        assert by_title[title]["type"] == "logs"
        assert by_title[title]["options"]["wrapLogMessage"] is True
    assert by_title["Attempt"]["fieldConfig"]["defaults"]["custom"]["cellOptions"] == {
        "type": "auto",
        "wrapText": True,
    }


def test_every_alert_links_to_a_dashboard_with_its_variables() -> None:
    dashboards = _committed()
    targets = {uid: links.variables(data) for uid, data in dashboards.items()}
    rules = yaml.safe_load(render.RULES_FILE.read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert alerts
    for alert in alerts:
        url = alert["annotations"]["dashboard_url"]
        assert url.startswith(DEFAULT.grafana_url + "/d/"), alert["alert"]
        path = url.removeprefix(DEFAULT.grafana_url)
        filled = path.replace("{{ $labels.task_name | urlquery }}", "app%3Atask")
        assert links.url_problems(filled, source=frozenset(), targets=targets) == []
        query = parse_qs(urlsplit(filled).query)
        if "task_name" in alert["expr"] and "{{ $labels.task_name }}" in str(alert):
            assert query["var-task_name"] == ["app:task"], alert["alert"]
            assert path.startswith(f"/d/{HISTORY_UID}/"), alert["alert"]
        if alert["alert"].startswith("TaskiqTaskFailureRate"):
            assert query["var-status"] == ["failed"]
            assert query["from"] in (["now-45m"], ["now-10m"])


def test_grafana_interpolation_of_text_boxes_and_all() -> None:
    from dashboards.interpolation import ALL, TimeRange, Variable, expand, rfc3339

    at = datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)
    assert rfc3339(at) == "2026-01-02T03:04:05.12Z"
    assert rfc3339(at.replace(microsecond=0)) == "2026-01-02T03:04:05Z"
    known = {
        "status": Variable("status", ("pending", "failed")),
        "task_name": Variable("task_name", ("a",), TASK_ALL_VALUE),
        "error": Variable("error"),
    }
    time = TimeRange(at, at, timedelta(seconds=30))

    def run(raw: str, **values: Any) -> str:
        return expand(raw, time=time, known=known, values=values)

    assert run("IN (${status:sqlstring})", status=ALL) == "IN ('pending','failed')"
    assert run("IN (${task_name:sqlstring})", task_name=ALL) == f"IN ({TASK_ALL_VALUE})"
    assert run("${error:sqlstring}", error="") == "''"
    assert run("${error:sqlstring}", error="it's 50% \\ a_b") == "'it''s 50% \\ a_b'"
    assert run("$__timeFilter(x) $__interval $__interval_ms") == (
        "x BETWEEN '2026-01-02T03:04:05.12Z' AND '2026-01-02T03:04:05.12Z' 30s 30000"
    )
    # The server expands macros in the whole text, a value's literal included.
    assert run("${error:sqlstring}", error="$__timeFrom()") == "''2026-01-02T03:04:05.12Z''"
    with pytest.raises(ValueError, match="only sqlstring"):
        run("${error}", error="x")


def test_relations_leave_out_common_table_expressions() -> None:
    raw = (
        "WITH a AS (SELECT 1 FROM task_execution_rollups), b AS MATERIALIZED (SELECT 2) "
        "SELECT * FROM a JOIN b USING (x) JOIN task_execution_logs t ON true"
    )
    assert sql.relations(raw) == {"task_execution_rollups", "task_execution_logs"}
