"""The alerting and recording rules: promtool checks and unit tests, the alert
contract (names, labels, annotations, runbook sections), and the configs that
load them (prometheus.yml, alertmanager.yml)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.config import DEFAULT, Config, FailureRateAlert, LatencyAlert, TaskThreshold
from dashboards.recording import recording_rules
from dashboards.render import RULES_FILE, render_rules
from dashboards.rules import ALERT_NAMES, alerting_rules
from exporter.slo.alerts import ALERT_NAMES as SLO_ALERT_NAMES

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "exporter" / "assets"
TESTS = sorted((ASSETS / "prometheus" / "tests").glob("*.test.yml"))
PER_TASK = {
    "TaskiqTaskFailureRateHigh",
    "TaskiqTaskFailureRateCritical",
    "TaskiqTaskDurationHigh",
    "TaskiqTasksStuck",
}


def _tool(name: str) -> str:
    """The binary, or a skip locally and a failure in CI (where it is installed)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: apt-get install prometheus prometheus-alertmanager")
        pytest.skip(f"{name} is not installed")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT)


def test_alert_names_are_the_contract() -> None:
    assert ALERT_NAMES == (
        "TaskiqTaskFailureRateHigh",
        "TaskiqTaskFailureRateCritical",
        "TaskiqTaskDurationHigh",
        "TaskiqQueueWaitHigh",
        "TaskiqTasksStuck",
        "TaskiqExporterDown",
        "TaskiqLogPersistenceFailing",
    )
    assert {r["alert"] for r in alerting_rules(DEFAULT)} == set(ALERT_NAMES)


@pytest.mark.parametrize("rule", alerting_rules(DEFAULT), ids=lambda r: r["alert"])
def test_every_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    notes = rule["annotations"]
    assert "{{" not in notes["summary"]
    assert notes["summary"].endswith(".")
    assert "{{ $value" in notes["description"] or "{{ $labels.instance" in notes["description"]
    if rule["alert"] in PER_TASK:
        assert "{{ $labels.task_name }}" in notes["description"]
    anchor = notes["runbook_url"].rsplit("#", 1)[1]
    headings = re.findall(r"^## (\w+)$", (ASSETS / "runbook.md").read_text(), re.M)
    assert anchor in {h.lower() for h in headings}


def test_failure_rate_alerts_have_a_volume_guard() -> None:
    for rule in alerting_rules(DEFAULT):
        if rule["alert"].startswith("TaskiqTaskFailureRate"):
            assert re.search(r"\nand\n.*completed:rate\d+m \* \d+ >= [1-9]", rule["expr"])


def test_recording_rules_are_named_level_metric_operations() -> None:
    for rule in recording_rules(DEFAULT):
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def _bucket(task: str, le: str, values: str) -> dict[str, str]:
    labels = f'job="taskiq-exporter", instance="w:8000", task_name="{task}", le="{le}"'
    return {"series": f"taskiq_task_duration_seconds_bucket{{{labels}}}", "values": values}


def test_per_task_thresholds_override_the_default(tmp_path: Path) -> None:
    """Both tasks run 5-10 minutes (p95 585s): only the one without an override fires."""
    promtool = _tool("promtool")
    cfg = Config(
        duration=LatencyAlert(
            severity="warning",
            window="5m",
            for_="15m",
            threshold=TaskThreshold(300.0, {"app.reports:build": 900.0}),
        )
    )
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(cfg))
    series = [
        _bucket(task, le, values)
        for task in ("app.reports:build", "mail:send")
        for le, values in (("300", "0x40"), ("600", "0+1x40"), ("+Inf", "0+1x40"))
    ]
    expected = {
        "exp_labels": {
            "severity": "warning",
            "cause": "p95_duration",
            "job": "taskiq-exporter",
            "task_name": "mail:send",
        },
        "exp_annotations": {
            "summary": "The p95 duration of a task is above its threshold.",
            "description": "p95 duration of mail:send (job taskiq-exporter) is 9m 45s over "
            "the last 5m (threshold 300s unless overridden).",
            "runbook_url": f"{cfg.runbook_url}#taskiqtaskdurationhigh",
            "dashboard_url": f"{cfg.grafana_url}/d/taskiq-history/taskiq-history"
            "?var-task_name=mail%3Asend&from=now-20m&to=now",
        },
    }
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "30m",
                        "alertname": "TaskiqTaskDurationHigh",
                        "exp_alerts": [expected],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "override.test.yml"
    path.write_text(yaml.safe_dump(test))
    result = _run(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_file_is_valid() -> None:
    result = _run(_tool("promtool"), "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = _run(_tool("promtool"), "test", "rules", *map(str, TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def _cases() -> list[dict[str, Any]]:
    return [
        case
        for path in TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_every_alert_is_tested_firing_and_silent(alert: str) -> None:
    cases = [c for c in _cases() if c["alertname"] == alert]
    assert any(c["exp_alerts"] for c in cases), f"{alert}: no test where it fires"
    assert any(not c["exp_alerts"] for c in cases), f"{alert}: no test where it stays silent"


def test_the_volume_guard_is_what_keeps_one_failure_silent(tmp_path: Path) -> None:
    """Without the guard the 'silent below the volume guard' scenario pages: the
    unit tests notice a broken rule, not just a broken file."""
    promtool = _tool("promtool")
    unguarded = Config(
        failure_rate_warning=FailureRateAlert("warning", TaskThreshold(0.05), "30m", 0, "15m"),
        failure_rate_critical=FailureRateAlert("critical", TaskThreshold(0.25), "5m", 0, "5m"),
    )
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / RULES_FILE.name).write_text(render_rules(unguarded))
    test = tmp_path / "tests" / "failure_rate.test.yml"
    shutil.copy(ASSETS / "prometheus" / "tests" / "failure_rate.test.yml", test)
    result = _run(promtool, "test", "rules", str(test))
    assert result.returncode != 0
    assert "silent below the volume guard" in result.stdout + result.stderr


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    # Laid out as the compose file mounts it: the config and the shipped rules beside it.
    shutil.copy(ROOT / "prometheus" / "prometheus.yml", tmp_path)
    shutil.copytree(ASSETS / "prometheus" / "rules", tmp_path / "rules")
    result = _run(_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    assert DEFAULT.job in {job["job_name"] for job in config["scrape_configs"]}


def test_alertmanager_config_is_valid() -> None:
    result = _run(_tool("amtool"), "check-config", "exporter/assets/alertmanager/alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_routes_every_severity_and_inhibits_known_alerts() -> None:
    config = yaml.safe_load((ASSETS / "alertmanager" / "alertmanager.yml").read_text())
    routed = {m for route in config["route"]["routes"] for m in route["matchers"]}
    for severity in {r["labels"]["severity"] for r in alerting_rules(DEFAULT)}:
        assert f'severity="{severity}"' in routed
    slo_names = set(SLO_ALERT_NAMES.values())
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            name, op, value = re.fullmatch(r'(\w+)(=~|=)"(.*)"', matcher).groups()  # type: ignore[union-attr]
            if name == "severity":
                assert value in {"critical", "warning", "info"}, matcher
            elif op == "=":
                assert value in ALERT_NAMES, matcher
            else:  # a regex must name the burn-rate alerts it inhibits, all of them
                assert {a for a in slo_names if re.fullmatch(value, a)} == slo_names, matcher
