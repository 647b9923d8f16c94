"""The SLO rules generator: burn factors and windows, which tasks an entry owns,
the alert contract, promtool's checks and unit tests (exporter/assets/prometheus/
tests/slo_*.test.yml), the low-traffic guard, the static alerts stepping aside,
and `taskiq-exporter rules export --slos`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from dashboards import links
from dashboards.common import HISTORY_UID, TASK_DETAIL_UID
from dashboards.config import DEFAULT
from dashboards.render import (
    DASHBOARDS_DIR,
    RULES_FILE,
    SLO_EXAMPLE,
    SLO_RULES_FILE,
    render_example_slo_rules,
)
from dashboards.rules import alerting_rules as static_alerts
from exporter.cli import main
from exporter.slo.alerts import ALERT_NAMES, alerting_rules, rules_document
from exporter.slo.load import load, parse
from exporter.slo.recording import OBJECTIVE, matchers, recorded_names
from exporter.slo.render import RULES_NAME, render_slo_rules
from exporter.slo.windows import BURN_WINDOWS, DEFAULT_PROFILE, Profile
from tests.test_rules import _run, _tool

ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = ROOT / "exporter" / "assets" / "prometheus" / "tests"
SLO_TESTS = sorted(TESTS_DIR.glob("slo_*.test.yml"))
RUNBOOK = ROOT / "exporter" / "assets" / "runbook.md"


def _rules(text: str, profile: Profile | None = None) -> list[dict[str, Any]]:
    doc = rules_document(
        parse(text), job="taskiq-exporter", runbook_url="http://x/runbook", profile=profile
    )
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_burn_factors_are_the_workbooks_for_30_days_and_scale_with_the_window() -> None:
    assert [(b.severity, b.long, b.short) for b in BURN_WINDOWS] == [
        ("critical", "1h", "5m"),
        ("critical", "6h", "30m"),
        ("warning", "1d", "2h"),
        ("warning", "3d", "6h"),
    ]
    assert [b.factor("30d") for b in BURN_WINDOWS] == [14.4, 6.0, 3.0, 1.0]
    assert [b.factor("28d") for b in BURN_WINDOWS] == [13.44, 5.6, 2.8, pytest.approx(0.9333, 1e-3)]


def test_ratios_are_recorded_over_every_window_the_alerts_need() -> None:
    assert DEFAULT_PROFILE.windows() == ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
    records = {
        r["record"] for r in _rules("slos: [{task_name: a:b, success: 0.99}]") if "record" in r
    }
    for window in DEFAULT_PROFILE.windows():
        assert f"task_name:taskiq_slo_errors:ratio_rate{window}" in records
    assert records == recorded_names(DEFAULT_PROFILE)


def test_final_failures_are_failed_attempts_minus_retries() -> None:
    (errors,) = [
        r
        for r in _rules("slos: [{task_name: a:b, success: 0.99}]")
        if r.get("record") == "task_name:taskiq_slo_errors:rate1h"
    ]
    assert errors["labels"] == {"slo": "success"}
    assert (
        'taskiq_tasks_completed_total{job="taskiq-exporter", task_name=~"a:b", status="failed"}'
        in (errors["expr"])
    )
    assert "-\n  sum without (instance) (rate(taskiq_task_retries_total" in errors["expr"]


def test_the_test_profile_keeps_names_and_divides_durations() -> None:
    fast = _rules("slos: [{task_name: a:b, success: 0.99}]", Profile(speedup=60))
    slow = _rules("slos: [{task_name: a:b, success: 0.99}]")
    assert [r.get("record", r.get("alert")) for r in fast] == [
        r.get("record", r.get("alert")) for r in slow
    ]
    text = str(fast)
    assert "[5s]" in text
    assert "[4320s]" in text
    assert "[43200s:5s]" in text
    assert {r["for"] for r in fast if "alert" in r} == {"2s", "15s"}


def test_an_exact_name_wins_over_regexes_and_a_regex_over_later_ones() -> None:
    cfg = parse(
        """
        slos:
          - {task_name_regex: "app:.*", success: 0.9}
          - {task_name: "app:send", success: 0.99}
          - {task_name_regex: "app:s.*", success: 0.95}
        """
    )
    regex, exact, later = cfg.slos
    assert matchers(cfg, exact) == ['task_name="app:send"']
    assert matchers(cfg, regex) == ['task_name=~"app:.*"', 'task_name!~"app:send"']
    assert matchers(cfg, later) == ['task_name=~"app:s.*"', 'task_name!~"(?:app:.*)|app:send"']


def test_a_loose_objective_still_pages_when_everything_fails() -> None:
    """With a 10% budget even a total outage burns at 10x: the 14.4x page would
    never fire, so it fires when (nearly) every event is bad."""
    (page, _) = [r for r in _rules("slos: [{task_name: a:b, success: 0.9}]") if "alert" in r]
    assert "/ 0.1 > 9.99\n" in page["expr"]
    assert "/ 0.1 > 6\n" in page["expr"]


@pytest.mark.parametrize("rule", alerting_rules(load(SLO_EXAMPLE), DEFAULT_PROFILE, "http://x/rb"))
def test_every_slo_alert_keeps_the_alert_contract(rule: dict[str, Any]) -> None:
    assert rule["alert"] in ALERT_NAMES.values()
    assert rule["labels"]["severity"] in {"critical", "warning"}
    notes = rule["annotations"]
    assert "{{" not in notes["summary"]
    assert notes["summary"].endswith(".")
    for needed in ("{{ $labels.task_name }}", "{{ $value", "humanizePercentage"):
        assert needed in notes["description"]
    anchor = notes["runbook_url"].rsplit("#", 1)[1]
    assert anchor in {h.lower() for h in re.findall(r"^## (\w+)$", RUNBOOK.read_text(), re.M)}
    assert notes["dashboard_url"].startswith(f"{DEFAULT.grafana_url}/d/")


def test_every_slo_alert_links_to_the_dashboard_of_its_task_over_its_windows() -> None:
    """Success burns open the task's failed attempts in the history; latency and
    queue-wait burns its task detail dashboard (percentiles, burn rates, budget);
    over the severity's longest window. The links pass the dashboards' link check."""
    loaded = (json.loads(p.read_text()) for p in DASHBOARDS_DIR.glob("*.json"))
    targets = {data["uid"]: links.variables(data) for data in loaded}
    rules = yaml.safe_load(SLO_RULES_FILE.read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert {a["labels"]["slo"] for a in alerts} == set(ALERT_NAMES)
    for alert in alerts:
        url = alert["annotations"]["dashboard_url"].removeprefix(DEFAULT.grafana_url)
        filled = url.replace("{{ $labels.task_name | urlquery }}", "billing%3Acharge")
        assert links.url_problems(filled, source=frozenset(), targets=targets) == []
        query = parse_qs(urlsplit(filled).query)
        assert query["var-task_name"] == ["billing:charge"]
        longest = {"critical": "6h", "warning": "72h"}[alert["labels"]["severity"]]
        assert (query["from"], query["to"]) == ([f"now-{longest}"], ["now"])
        if alert["labels"]["slo"] == "success":
            assert url.startswith(f"/d/{HISTORY_UID}/")
            assert query["var-status"] == ["failed"]
        else:
            assert url.startswith(f"/d/{TASK_DETAIL_UID}/")


def test_slo_alert_links_follow_the_test_profile() -> None:
    fast = _rules("slos: [{task_name: a:b, success: 0.99}]", Profile(speedup=60))
    urls = [r["annotations"]["dashboard_url"] for r in fast if "alert" in r]
    assert [u.rsplit("&from=", 1)[1] for u in urls] == ["now-6m&to=now", "now-72m&to=now"]


def test_the_example_rules_are_committed_and_pass_promtool_check() -> None:
    assert SLO_RULES_FILE.read_text() == render_example_slo_rules(DEFAULT)
    result = _run(_tool("promtool"), "check", "rules", str(SLO_RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "duplicate" not in result.stdout + result.stderr


def test_promtool_slo_unit_tests_pass() -> None:
    result = _run(_tool("promtool"), "test", "rules", *map(str, SLO_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("alert", sorted(ALERT_NAMES.values()))
def test_every_slo_alert_is_tested_paging_ticketing_and_silent(alert: str) -> None:
    cases = [
        case
        for path in SLO_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert
    ]
    severities = {a["exp_labels"]["severity"] for c in cases for a in c["exp_alerts"]}
    assert severities == {"critical", "warning"}
    assert any(not c["exp_alerts"] for c in cases)


def test_the_low_traffic_guard_is_what_keeps_one_failure_silent(tmp_path: Path) -> None:
    """With min_errors 1 the low-traffic scenario pages: the unit tests notice a
    missing guard, not just a broken file."""
    promtool = _tool("promtool")
    unguarded = SLO_EXAMPLE.read_text().replace("min_errors: 3", "min_errors: 1")
    assert unguarded != SLO_EXAMPLE.read_text()
    for folder in ("slo", "rules", "tests"):
        (tmp_path / folder).mkdir()
    (tmp_path / "slo" / RULES_NAME).write_text(
        render_slo_rules(parse(unguarded), job=DEFAULT.job, runbook_url=DEFAULT.runbook_url)
    )
    shutil.copy(RULES_FILE, tmp_path / "rules")
    shutil.copy(TESTS_DIR / "slo_success.test.yml", tmp_path / "tests")
    result = _run(promtool, "test", "rules", str(tmp_path / "tests" / "slo_success.test.yml"))
    assert result.returncode != 0
    assert "low traffic stays silent on one failure" in result.stdout + result.stderr


def test_static_alerts_leave_tasks_with_an_objective_to_the_burn_rate_alerts() -> None:
    kinds = {
        "TaskiqTaskFailureRateHigh": "success",
        "TaskiqTaskFailureRateCritical": "success",
        "TaskiqTaskDurationHigh": "latency",
    }
    for rule in static_alerts(DEFAULT):
        if rule["alert"] in kinds:
            tail = f'unless on (job, task_name)\n{OBJECTIVE}{{slo="{kinds[rule["alert"]]}"}}'
            assert rule["expr"].endswith(tail)
    per_task_wait = [
        r for r in static_alerts(DEFAULT) if r["labels"].get("cause") == "p95_queue_wait"
    ]
    assert per_task_wait[0]["expr"].endswith(f'{OBJECTIVE}{{slo="queue_wait"}}')


def test_rules_export_with_slos_writes_both_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["rules", "export", str(out), "--slos", str(SLO_EXAMPLE)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [RULES_NAME, RULES_FILE.name]
    assert (out / RULES_NAME).read_text() == SLO_RULES_FILE.read_text()
    assert main(["rules", "export", str(out), "--slos", str(SLO_EXAMPLE), "--check"]) == 0
    result = _run(_tool("promtool"), "check", "rules", *(str(p) for p in out.iterdir()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_export_with_slos_follows_job_runbook_and_grafana(tmp_path: Path) -> None:
    slos = tmp_path / "slos.yml"
    slos.write_text("slos:\n  - task_name: app.tasks:send_email\n    success: 0.99\n")
    args = ["rules", "export", str(tmp_path / "out"), "--slos", str(slos)]
    urls = ["--runbook-url", "https://wiki.example/rb", "--grafana-url", "https://g.example"]
    assert main([*args, "--job", "prod", *urls]) == 0
    text = (tmp_path / "out" / RULES_NAME).read_text()
    assert 'job="prod"' in text
    assert 'job="taskiq-exporter"' not in text
    assert "runbook_url: https://wiki.example/rb#taskiqtasksuccessbudgetburn" in text
    assert "dashboard_url: https://g.example/d/taskiq-history/taskiq-history?" in text


def test_rules_export_refuses_a_bad_slo_file_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slos = tmp_path / "slos.yml"
    slos.write_text(
        "slos:\n  - task_name: a:b\n    latency: {threshold_seconds: 3, objective: 0.9}\n"
    )
    assert main(["rules", "export", str(tmp_path / "out"), "--slos", str(slos)]) == 2
    err = capsys.readouterr().err
    assert f"{slos}:3: slos[0].latency.threshold_seconds: 3s is not a bucket bound" in err
    assert not (tmp_path / "out").exists()
