"""docker-compose.yml, read as data (no Docker engine runs here): what it mounts
exists, what Prometheus and Grafana talk to is a service, images are pinned,
services are health-checked and nothing listens beyond 127.0.0.1."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS: dict[str, Any] = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
MULTIPROC_DIR = "/tmp/taskiq-metrics"


def _host(address: str) -> str:
    return (urlsplit(address).hostname if "//" in address else address.rsplit(":", 1)[0]) or ""


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source for every short-syntax volume."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_bind_mount_exists(name: str) -> None:
    for target, source in _mounts(SERVICES[name]).items():
        if source.startswith("."):
            assert (ROOT / source).exists(), f"{name}: {source} -> {target} is missing"
        else:
            assert source in COMPOSE["volumes"], f"{name}: undeclared volume {source}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned(name: str) -> None:
    image = SERVICES[name]["image"]
    repository, _, tag = image.rpartition(":")
    assert repository, image
    assert re.search(r"\d", tag), image
    assert tag != "latest", image


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_long_running_services_are_health_checked(name: str) -> None:
    service = SERVICES[name]
    if service.get("restart") == "no":  # one-shot jobs (migrations)
        return
    assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_every_port_is_bound_to_loopback() -> None:
    ports = [p for s in SERVICES.values() for p in s.get("ports", [])]
    assert ports
    assert all(str(p).startswith("127.0.0.1:") for p in ports), ports
    assert "127.0.0.1:3000:3000" in SERVICES["grafana"]["ports"]


def test_every_scrape_and_alerting_target_is_a_service() -> None:
    targets = [
        t
        for job in PROMETHEUS["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    ]
    targets += [
        t
        for am in PROMETHEUS["alerting"]["alertmanagers"]
        for sc in am["static_configs"]
        for t in sc["targets"]
    ]
    for target in targets:
        assert _host(target) in SERVICES or _host(target) == "localhost", target


def test_prometheus_loads_the_rules_its_config_names() -> None:
    mounts = _mounts(SERVICES["prometheus"])
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/rules"] == "./exporter/assets/prometheus/rules"
    assert PROMETHEUS["rule_files"] == ["rules/*.yml"]


def test_grafana_datasources_point_at_services() -> None:
    provisioning = ROOT / "grafana" / "provisioning" / "datasources" / "taskiq.yml"
    datasources = yaml.safe_load(provisioning.read_text())["datasources"]
    assert {d["type"] for d in datasources} == {"prometheus", "grafana-postgresql-datasource"}
    for datasource in datasources:
        assert _host(datasource["url"]) in SERVICES, datasource["url"]


def test_grafana_loads_both_generated_dashboards() -> None:
    provider = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "dashboards" / "taskiq.yml").read_text()
    )["providers"][0]
    mounted = {
        target: source
        for target, source in _mounts(SERVICES["grafana"]).items()
        if target.startswith(provider["options"]["path"] + "/")
    }
    generated = {
        f"./exporter/assets/dashboards/{p.name}"
        for p in (ROOT / "exporter" / "assets" / "dashboards").glob("*.json")
    }
    assert set(mounted.values()) == generated
    assert len(generated) == 2


def test_exporter_sums_the_worker_processes() -> None:
    """Same multiprocess directory (a shared volume) and the worker's pid namespace."""
    worker, exporter = SERVICES["worker"], SERVICES["exporter"]
    assert exporter["pid"] == "service:worker"
    for service in (worker, exporter):
        assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] == MULTIPROC_DIR
        assert _mounts(service)[MULTIPROC_DIR] == "metrics"
    assert "--workers" in worker["command"]


def test_app_services_start_after_the_migration() -> None:
    for name in ("worker", "exporter"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["command"] == ["taskiq-exporter", "db", "upgrade"]


def test_dockerfile_builds_the_package_with_redis_on_pinned_python() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)
    assert '".[redis]"' in dockerfile
    assert re.search(r"^USER (?!root)", dockerfile, re.M)
