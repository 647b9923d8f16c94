"""`taskiq-exporter dashboards export` and `rules export`: the shipped files,
equal to what the generators produce, with the job, runbook URL and Grafana URL a
user sets."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from dashboards.config import DEFAULT
from dashboards.render import DASHBOARDS_DIR, RULES_FILE, SLO_EXAMPLE, render_rules
from exporter import resources
from exporter.cli import main
from exporter.slo.load import load
from exporter.slo.render import RULES_NAME, render_slo_rules
from tests.test_rules import _tool


def test_dashboards_export_writes_the_generated_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboards", "export", str(tmp_path / "out")]) == 0
    written = {p.name: p.read_text() for p in (tmp_path / "out").iterdir()}
    committed = {p.name: p.read_text() for p in DASHBOARDS_DIR.glob("*.json")}
    assert written == committed
    assert set(written) == {
        "taskiq-overview.json",
        "taskiq-task-detail.json",
        "taskiq-history.json",
        "taskiq-execution.json",
    }
    assert capsys.readouterr().out.count(": written") == 4


def test_dashboards_check_fails_on_a_stale_or_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboards", "export", "--check", str(tmp_path)]) == 1
    assert not list(tmp_path.iterdir()), "--check writes nothing"
    assert main(["dashboards", "export", str(tmp_path)]) == 0
    assert main(["dashboards", "export", "--check", str(tmp_path)]) == 0
    (tmp_path / "taskiq-overview.json").write_text("{}")
    capsys.readouterr()
    assert main(["dashboards", "export", "--check", str(tmp_path)]) == 1
    assert "taskiq-overview.json: out of date" in capsys.readouterr().out


def test_rules_export_defaults_equal_the_committed_file(tmp_path: Path) -> None:
    assert main(["rules", "export", str(tmp_path)]) == 0
    assert (tmp_path / RULES_FILE.name).read_text() == RULES_FILE.read_text()
    assert main(["rules", "export", "--check", str(tmp_path)]) == 0


def test_rules_export_sets_job_and_runbook_as_the_generator_would(tmp_path: Path) -> None:
    """Every place the generator puts the job or the runbook URL is replaced."""
    job, runbook = "prod-taskiq_exporter", "https://wiki.example.com/ops/taskiq?page=runbook"
    args = ["rules", "export", str(tmp_path), "--job", job, "--runbook-url", runbook]
    assert main(args) == 0
    exported = (tmp_path / RULES_FILE.name).read_text()
    assert exported == render_rules(dataclasses.replace(DEFAULT, job=job, runbook_url=runbook))
    assert DEFAULT.job not in exported.replace("job:", "")
    assert main([*args, "--check"]) == 0
    assert main(["rules", "export", str(tmp_path), "--check"]) == 1
    result = subprocess.run(
        [_tool("promtool"), "check", "rules", str(tmp_path / RULES_FILE.name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_generator_and_the_export_share_the_default_grafana_url() -> None:
    assert DEFAULT.grafana_url == resources.DEFAULT_GRAFANA_URL
    assert f"dashboard_url: {DEFAULT.grafana_url}/d/" in RULES_FILE.read_text()


def test_rules_export_sets_the_grafana_url_of_every_dashboard_link(tmp_path: Path) -> None:
    """The static rules as the generator writes them for that Grafana, and the SLO
    rules too; a trailing slash does not double the path's."""
    grafana = "https://grafana.example.com/ops"
    args = ["rules", "export", str(tmp_path), "--slos", str(SLO_EXAMPLE)]
    assert main([*args, "--grafana-url", f"{grafana}/"]) == 0
    exported = (tmp_path / RULES_FILE.name).read_text()
    assert exported == render_rules(dataclasses.replace(DEFAULT, grafana_url=grafana))
    slo = (tmp_path / RULES_NAME).read_text()
    assert slo == render_slo_rules(
        load(SLO_EXAMPLE), job=DEFAULT.job, runbook_url=DEFAULT.runbook_url, grafana_url=grafana
    )
    for text in (exported, slo):
        urls = re.findall(r"^\s*dashboard_url: (\S+)", text, re.M)
        assert len(urls) == text.count("- alert:") > 0
        assert all(url.startswith(f"{grafana}/d/taskiq-") for url in urls), urls
        assert DEFAULT.grafana_url not in text
    assert main([*args, "--grafana-url", grafana, "--check"]) == 0
    assert main([*args, "--check"]) == 1


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--job", 'a"b', "a Prometheus job name"),
        ("--job", "", "a Prometheus job name"),
        ("--runbook-url", "wiki/runbook", "http(s) URL"),
        ("--runbook-url", "https://wiki.example/runbook#top", "without a #fragment"),
        ("--runbook-url", "https://wiki.example/run book", "percent-encode"),
        ("--grafana-url", "grafana:3000", "http(s) URL"),
        ("--grafana-url", "https://grafana.example/?orgId=1", "without a ?query or #fragment"),
        ("--grafana-url", "https://grafana.example/#top", "without a ?query or #fragment"),
        ("--grafana-url", "https://grafana.example/my grafana", "percent-encode"),
    ],
)
def test_rules_export_refuses_values_it_cannot_write_safely(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    assert main(["rules", "export", str(tmp_path), option, value]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert not list(tmp_path.iterdir())
