"""Links between the dashboards and into the exporter's API: how they are built,
and the check that each one leads to a provisioned dashboard with variables it
has and a time range.

A link into a dashboard is ``/d/<uid>/<uid>?`` and its parameters: ``var-<name>=``
for a variable of the target, ``${name:queryparam}`` to carry a variable of the
source (Grafana writes ``var-name=value`` for each value), and a time range
(``${__url_time_range}``, or ``from=`` and ``to=``). Values may hold Grafana's
data-link variables: ``${__value.raw}``, ``${__data.fields.<column>}``,
``${__field.labels.<label>}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dashboards.common import EXECUTION_UID, HISTORY_UID, TASK_DETAIL_UID
from dashboards.lint import panels
from dashboards.log_sql import ATTEMPT, RANGE_FROM, RANGE_TO, STATUS, TASK
from exporter.slo.links import dashboard_url

Json = dict[str, Any]
API = "/api/v1/monitoring"
EXPORTER = "${exporter_url}"
TIME = "${__url_time_range}"
# Carried from every dashboard to every other one: all have these variables.
CARRIED = ("${datasource:queryparam}", "${postgres:queryparam}", "${exporter_url:queryparam}")
ROW_TIME = (f"from=${{__data.fields.{RANGE_FROM}}}", f"to=${{__data.fields.{RANGE_TO}}}")
_TOKEN = re.compile(r"\$\{(?P<name>[^}:]+)(?::(?P<fmt>[^}]+))?\}")
_FORMATS = {None, "raw", "percentencode", "queryparam"}


def link(title: str, url: str, *, new_tab: bool = False) -> Json:
    return {"title": title, "url": url, "targetBlank": new_tab}


def api_link(title: str, path: str) -> Json:
    """A data link into the exporter's history API, as the browser reaches it."""
    return link(title, f"{EXPORTER}{API}{path}", new_tab=True)


def execution(title: str, attempt_id: str = "${__value.raw}") -> Json:
    """To the execution dashboard for one attempt, an hour either side of it."""
    return link(
        title, dashboard_url(EXECUTION_UID, f"var-{ATTEMPT}={attempt_id}", *ROW_TIME, *CARRIED)
    )


def history(
    title: str,
    *,
    task: str,
    status: str | None = None,
    attempt: str | None = None,
    time: tuple[str, ...] = (TIME,),
) -> Json:
    """To the history dashboard for one task (``task`` is a link expression)."""
    params = [f"var-{TASK}={task}"]
    if status is not None:
        params.append(f"var-{STATUS}={status}")
    if attempt is not None:
        params.append(f"var-{ATTEMPT}={attempt}")
    return link(title, dashboard_url(HISTORY_UID, *params, *time, *CARRIED))


def task_detail(title: str, *, task: str, time: tuple[str, ...] = ROW_TIME) -> Json:
    """To the task detail dashboard for one task, by default at the row's time."""
    return link(title, dashboard_url(TASK_DETAIL_UID, f"var-{TASK}={task}", *time, *CARRIED))


def series_task_detail() -> Json:
    """Per-series link from an overview panel to the task detail dashboard."""
    return link(
        "Task detail: ${__field.labels.task_name}",
        dashboard_url(
            TASK_DETAIL_UID,
            TIME,
            *CARRIED,
            "${job:queryparam}",
            "${instance:queryparam}",
            "var-task_name=${__field.labels.task_name}",
        ),
    )


# The check.


@dataclass(frozen=True)
class Found:
    """A link and where it is: its dashboard, panel and the columns it may read."""

    dashboard: str
    where: str
    url: str
    columns: frozenset[str]


def _columns(panel: Json) -> frozenset[str]:
    words: set[str] = set()
    for target in panel.get("targets", []):
        words |= set(re.findall(r"\w+", target.get("rawSql", "")))
    return frozenset(words)


def found_links(uid: str, data: Json) -> Iterator[Found]:
    """Every link of one dashboard: dashboard links, panel links, field links."""
    for item in data.get("links", []):
        if item.get("type") == "link":
            yield Found(uid, "dashboard links", item["url"], frozenset())
    for panel in panels(data):
        where, columns = panel.get("title", "?"), _columns(panel)
        field = panel.get("fieldConfig", {})
        urls = [*panel.get("links", []), *field.get("defaults", {}).get("links", [])]
        for override in field.get("overrides", []):
            for prop in override.get("properties", []):
                if prop.get("id") == "links":
                    urls += prop["value"]
        for item in urls:
            yield Found(uid, where, item["url"], columns)


def variables(data: Json) -> frozenset[str]:
    return frozenset(t["name"] for t in data.get("templating", {}).get("list", []))


def _token_problems(value: str, source: frozenset[str], columns: frozenset[str]) -> Iterator[str]:
    for m in _TOKEN.finditer(value):
        name, fmt = m["name"], m["fmt"]
        if fmt not in _FORMATS:
            yield f"{m.group()}: unknown format"
        if name.startswith("__data.fields."):
            column = name.removeprefix("__data.fields.")
            if column not in columns:
                yield f"{m.group()}: the panel's query has no column {column!r}"
        elif name.startswith(("__value.", "__field.labels.")) or name == "__url_time_range":
            continue
        elif name not in source:
            yield f"{m.group()}: the dashboard has no variable {name!r}"


def url_problems(
    url: str,
    *,
    source: frozenset[str],
    targets: Mapping[str, frozenset[str]],
    columns: frozenset[str] = frozenset(),
) -> list[str]:
    """Why ``url`` does not lead where it should; ``source`` is the variables of
    the dashboard it is on, ``targets`` the variables of every dashboard by uid."""
    path, _, query = url.partition("?")
    if path.startswith(EXPORTER):
        if not path.startswith(f"{EXPORTER}{API}/"):
            return [f"{url}: not an API path"]
        return list(_token_problems(url, source, columns))
    match = re.fullmatch(r"/d/(?P<uid>[\w-]+)/(?P<slug>[\w-]+)", path)
    if match is None or match["uid"] not in targets:
        return [f"{url}: no provisioned dashboard"]
    target = targets[match["uid"]]
    problems: list[str] = []
    keys: set[str] = set()
    for param in query.split("&"):
        carried = re.fullmatch(r"\$\{(\w+):queryparam\}", param)
        if carried:
            if carried[1] not in target:
                problems.append(f"{param}: {match['uid']} has no variable {carried[1]!r}")
            if carried[1] not in source:
                problems.append(f"{param}: the dashboard has no variable {carried[1]!r}")
            continue
        if param == TIME:
            keys |= {"from", "to"}
            continue
        key, eq, value = param.partition("=")
        if not eq:
            problems.append(f"{param}: not a parameter")
            continue
        keys.add(key)
        if key.startswith("var-") and key.removeprefix("var-") not in target:
            problems.append(f"{param}: {match['uid']} has no variable {key[4:]!r}")
        elif not key.startswith("var-") and key not in {"from", "to", "orgId"}:
            problems.append(f"{param}: unknown parameter")
        problems += _token_problems(value, source, columns)
    if not {"from", "to"} <= keys:
        problems.append(f"{url}: no time range")
    return problems


def problems(dashboards: Mapping[str, Json]) -> list[str]:
    """Every broken link of the dashboards (by uid)."""
    targets = {uid: variables(data) for uid, data in dashboards.items()}
    found: list[str] = []
    for uid, data in dashboards.items():
        for item in found_links(uid, data):
            for problem in url_problems(
                item.url, source=targets[uid], targets=targets, columns=item.columns
            ):
                found.append(f"{uid} / {item.where}: {problem}")
    return found


def all_urls(dashboards: Mapping[str, Json]) -> Iterable[Found]:
    for uid, data in dashboards.items():
        yield from found_links(uid, data)
