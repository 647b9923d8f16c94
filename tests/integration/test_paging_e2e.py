"""The paging path end to end: real workers (2 processes, Redis broker) run two
tasks that succeed, then fail while a flag file exists, then succeed again; the
real service serves their metrics; a real Prometheus scrapes it and evaluates the
generated rules (the static ones from a Config with second-long windows and
``for``, the SLO ones from the SLO generator with ``Profile(speedup=60)``); a
real Alertmanager runs the shipped ``alertmanager.yml`` (receivers pointed at a
webhook the test runs, waits shortened: its routing is checked equal to the
shipped file) and delivers to that webhook.

``page:plain`` has no objective, so the static failure-rate alerts watch it;
``page:slo`` has a success objective, so the burn-rate alerts do. Each pages,
each page inhibits the ticket of the same task until it resolves, and each page
resolves once the failures stop.

Needs Redis, PostgreSQL and Debian's ``prometheus`` and ``prometheus-alertmanager``:
skipped locally when one is missing, a failure when ``CI`` is set.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dashboards.config import DEFAULT, Config
from dashboards.render import render_rules
from dashboards.rules import FAILURE_RATE_CRITICAL, FAILURE_RATE_HIGH, rules_document
from exporter.metrics import names as n
from exporter.slo.alerts import SUCCESS_BURN
from exporter.slo.alerts import rules_document as slo_rules_document
from exporter.slo.load import parse
from exporter.slo.render import RULES_NAME, render_slo_rules
from exporter.slo.windows import Profile
from tests.helpers import alerting
from tests.helpers import processes as p
from tests.helpers.alerting import Alertmanager, Delivered, Prometheus, Webhook
from tests.helpers.paging_app import PLAIN, SLO, TASK_NAMES
from tests.helpers.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.prometheus]

SLOS = f"""
slos:
  - task_name: "{SLO}"
    success: 0.99
    window: 7d
"""
SPEEDUP = 60  # SLO windows and `for` divided by 60: 5m -> 5s, 2m (page `for`) -> 2s
RATE = 2  # tasks of each name a second
PAGER, TICKET = "pager", "ticket"  # the shipped receivers that deliver; blackhole stays as is
# Every alert the scenario may deliver: (alertname, task_name, severity) -> receiver.
EXPECTED = {
    (FAILURE_RATE_CRITICAL, PLAIN, "critical"): PAGER,
    (FAILURE_RATE_HIGH, PLAIN, "warning"): TICKET,
    (SUCCESS_BURN, SLO, "critical"): PAGER,
    (SUCCESS_BURN, SLO, "warning"): TICKET,
}
# The page inhibits the ticket of the same task: (alertname, task_name) of each.
INHIBITS = {
    (FAILURE_RATE_CRITICAL, PLAIN): (FAILURE_RATE_HIGH, PLAIN),
    (SUCCESS_BURN, SLO): (SUCCESS_BURN, SLO),
}
# Long enough for the ticket group to be flushed (group_wait, then every
# group_interval) twice after the inhibited alert reached Alertmanager.
HOLD_SECONDS = 8


def _config(runbook_url: str) -> Config:
    """The checked-in thresholds with second-long windows and ``for``: the page
    (`for` 3s) fires well before the ticket (`for` 15s) of the same failures."""
    return replace(
        DEFAULT,
        runbook_url=runbook_url,
        failure_rate_critical=replace(
            DEFAULT.failure_rate_critical, window="10s", min_completions=5, for_="3s"
        ),
        failure_rate_warning=replace(
            DEFAULT.failure_rate_warning, window="30s", min_completions=5, for_="15s"
        ),
    )


def _rule_files(cfg: Config, tmp: Path) -> list[Path]:
    static, slo = tmp / "taskiq.rules.yml", tmp / RULES_NAME
    static.write_text(render_rules(cfg), encoding="utf-8")
    rules = render_slo_rules(
        parse(SLOS), job=cfg.job, runbook_url=cfg.runbook_url, profile=Profile(speedup=SPEEDUP)
    )
    slo.write_text(rules, encoding="utf-8")
    return [static, slo]


def _summaries(cfg: Config) -> dict[tuple[str, str], str]:
    """The generated summary of each (alertname, severity)."""
    documents = [
        rules_document(cfg),
        slo_rules_document(
            parse(SLOS), job=cfg.job, runbook_url=cfg.runbook_url, profile=Profile(speedup=SPEEDUP)
        ),
    ]
    return {
        (rule["alert"], rule["labels"]["severity"]): rule["annotations"]["summary"]
        for document in documents
        for group in document["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


@contextmanager
def _producing(env: dict[str, str]) -> Iterator[None]:
    cmd = [sys.executable, "-m", "tests.helpers.paging_app", "produce", str(RATE)]
    proc = subprocess.Popen(cmd, env=env, cwd=p.ROOT)
    try:
        yield
        assert proc.poll() is None, "the producer exited"
    finally:
        p.stop(proc)


def _page(webhook: Webhook, alertname: str, task: str, status: str) -> Delivered | None:
    """The first delivery of that page in that status."""
    found = webhook.delivered(alertname=alertname, task_name=task, severity="critical")
    return next((d for d in found if d.status == status), None)


def _ticket(webhook: Webhook, alertname: str, task: str) -> Delivered | None:
    found = webhook.delivered(alertname=alertname, task_name=task, severity="warning")
    return next((d for d in found if d.status == "firing"), None)


def _delivered(found: Delivered | None) -> Delivered:
    assert found is not None
    return found


def _in_alertmanager(am: Alertmanager, alertname: str, task: str, severity: str) -> dict[str, Any]:
    """That alert as Alertmanager's API shows it, or ``{}``."""
    found = am.alerts(alertname=alertname, task_name=task, severity=severity)
    assert len(found) <= 1, found
    return found[0] if found else {}


def _inhibited(am: Alertmanager) -> bool:
    """Whether every ticket is held, inhibited by the page of its task alone."""
    for (name, task), (target, target_task) in INHIBITS.items():
        page = _in_alertmanager(am, name, task, "critical")
        ticket = _in_alertmanager(am, target, target_task, "warning")
        if not (page and ticket):
            return False
        assert ticket["receivers"] == [{"name": TICKET}], ticket
        if ticket["status"]["state"] != "suppressed":
            return False
        assert ticket["status"]["inhibitedBy"] == [page["fingerprint"]], (ticket, page)
    return True


def _check_page(page: Delivered, cfg: Config, summaries: dict[tuple[str, str], str]) -> None:
    name, task = page.labels["alertname"], page.labels["task_name"]
    assert page.receiver == PAGER, page
    assert page.labels["severity"] == "critical", page
    assert page.labels["job"] == cfg.job, page
    assert page.group_labels == {"alertname": name, "job": cfg.job, "task_name": task}
    assert page.annotations["summary"] == summaries[name, "critical"], page
    description = page.annotations["description"]
    assert f"{task} (job {cfg.job})" in description, description
    assert not re.search(r"\{\{|<no value>|%!", description), description
    if name == SUCCESS_BURN:  # read back from the series the SLO rules record
        assert page.labels["slo"] == "success", page
        assert "(99% of its tasks succeed over 7d)" in description, description
        assert "of the budget is left" in description, description
        assert "an unknown share" not in description, description
    url, _, anchor = page.annotations["runbook_url"].partition("#")
    assert (url, anchor) == (cfg.runbook_url, name.lower()), page
    runbook = httpx.get(url, timeout=10)
    assert runbook.status_code == 200
    assert f'id="{anchor}"' in runbook.text, f"no section {anchor} in the served runbook"


def test_failing_tasks_page_through_alertmanager_inhibit_their_tickets_and_resolve(
    pg_store: str, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    prometheus = alerting.require_binary("prometheus")
    alertmanager = alerting.require_binary("prometheus-alertmanager", "alertmanager")
    p.require_redis()
    flag = tmp_path / "failing"
    (tmp_path / "metrics").mkdir()
    env = p.environment(pg_store, tmp_path / "metrics", PAGING_FAIL_FLAG=str(flag))
    port = unused_port()
    cfg = _config(f"http://127.0.0.1:{port}/runbook")
    summaries = _summaries(cfg)

    with ExitStack() as stack:
        webhook = stack.enter_context(Webhook())
        am_config = alerting.alertmanager_config({r: webhook.url(r) for r in (PAGER, TICKET)})
        shipped = yaml.safe_load(alerting.SHIPPED.read_text(encoding="utf-8"))
        assert alerting.unchanged_part(am_config) == alerting.unchanged_part(shipped)
        assert len(shipped["inhibit_rules"]) == len(INHIBITS)  # each one is exercised below
        am = stack.enter_context(Alertmanager.run(alertmanager, am_config, tmp_path))
        app = "tests.helpers.paging_app:broker"
        stack.enter_context(p.worker(env, 2, app=app, wait_children=True))
        service = stack.enter_context(p.service(env, port))
        prom = stack.enter_context(
            Prometheus.run(
                prometheus,
                job=cfg.job,
                target=service.removeprefix("http://"),
                rule_files=_rule_files(cfg, tmp_path),
                alertmanager=am.base.removeprefix("http://"),
                tmp=tmp_path,
            )
        )
        stack.enter_context(_producing(env))

        # Succeeding tasks: scraped, and nothing pages.
        succeeded = f'sum by (task_name) ({n.total(n.TASKS_COMPLETED)}{{status="success"}})'

        def scraped() -> bool:
            counts = {r["metric"]["task_name"]: float(r["value"][1]) for r in prom.query(succeeded)}
            return all(counts.get(task, 0) >= 10 for task in TASK_NAMES)

        wait_for(
            scraped, "successes of every task in Prometheus", 90, ignoring=alerting.UNREACHABLE
        )
        assert am.alerts() == []
        assert webhook.delivered() == []

        # Failures: each task pages.
        flag.touch()
        wait_for(lambda: all(_page(webhook, *k, "firing") for k in INHIBITS), "both pages", 120)
        firing = {key: _delivered(_page(webhook, *key, "firing")) for key in INHIBITS}
        for page in firing.values():
            _check_page(page, cfg, summaries)

        # While a page fires, Alertmanager holds the ticket of the same task
        # inhibited by it, and the ticket's receiver gets nothing.
        def inhibited() -> bool:
            tickets = webhook.delivered(severity="warning")
            assert tickets == [], f"a ticket was delivered while its page fired: {tickets}"
            return _inhibited(am)

        wait_for(inhibited, "the tickets inhibited by their pages", 120)
        until = time.monotonic() + HOLD_SECONDS

        def held() -> bool:
            for name, task in INHIBITS:
                page = _in_alertmanager(am, name, task, "critical")
                assert page.get("status", {}).get("state") == "active", f"{name} stopped: {page}"
            assert inhibited(), "a ticket is no longer inhibited while its page fires"
            return time.monotonic() > until

        wait_for(held, "the hold", HOLD_SECONDS + 60)

        # Recovery: each page resolves; its ticket, no longer inhibited, is delivered.
        flag.unlink()
        wait_for(
            lambda: all(_page(webhook, *k, "resolved") for k in INHIBITS), "both resolved", 150
        )
        for key, page in firing.items():
            resolved = _delivered(_page(webhook, *key, "resolved"))
            assert (resolved.receiver, resolved.fingerprint) == (PAGER, page.fingerprint)
            assert resolved.at > page.at
        wait_for(
            lambda: all(_ticket(webhook, *key) for key in INHIBITS.values()),
            "the tickets once their pages resolved",
            60,
        )

    for d in webhook.delivered():
        what = (d.labels["alertname"], d.labels.get("task_name", ""), d.labels["severity"])
        assert EXPECTED.get(what) == d.receiver, f"unexpected delivery: {d}"
