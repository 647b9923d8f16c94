"""docker-compose.yml, read as data (no Docker engine runs here): what it mounts
exists, what Prometheus and Grafana talk to is a service, images are pinned,
services are health-checked and nothing listens beyond 127.0.0.1."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from exporter import __version__

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


def test_grafana_loads_every_generated_dashboard() -> None:
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
    assert len(generated) == 4


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


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of every Dockerfile line, continuations joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(" ", 1)[0].upper(), line.split(" ", 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (its rules, in order)."""
    ignored = False
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
        if pattern == "*" or path == pattern or path.startswith(pattern + "/"):
            ignored = not negate
    return ignored


def test_dockerfile_builds_the_wheel_and_installs_it_with_the_locked_versions() -> None:
    steps = _dockerfile()
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) == 2, "a build stage and a runtime stage"
    for image in froms:
        assert re.match(r"python:3\.11\.\d+-slim", image), image
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "python -m build --wheel" in runs
    assert "pip install --no-deps -r /tmp/runtime.txt" in runs
    assert "pip install --no-deps /tmp/dist/*.whl" in runs
    assert " -e " not in runs, "not editable: the image runs the wheel"
    assert "pip check" in runs
    assert any(op == "USER" and args != "root" for op, args in steps)
    # The runtime stage gets no source, only the wheel from the build stage.
    runtime = steps[[op for op, _ in steps].index("FROM", 1) :]
    copies = [args for op, args in runtime if op == "COPY"]
    assert copies == ["requirements/runtime.txt /tmp/runtime.txt", "--from=build /dist/ /tmp/dist/"]


def test_the_build_context_holds_no_tests_benchmarks_or_local_files() -> None:
    for path in ("tests", "benchmarks", ".venv", ".git", "dashboards", "docs", "scripts",
                 ".taskiq-exporter", "taskiq_exporter.sqlite3"):  # fmt: skip
        assert _ignored(path), path
    for op, args in _dockerfile():
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert not _ignored(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"


def test_runtime_requirements_pin_every_dependency_of_the_wheel() -> None:
    pinned = {
        re.split(r"[=<>\[ ]", line, maxsplit=1)[0].lower().replace("_", "-")
        for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines()
        if line and not line.startswith((" ", "#", "-"))
    }
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*pyproject["dependencies"], *pyproject["optional-dependencies"]["redis"]]
    for requirement in wanted:
        name = re.split(r"[=<>\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not pinned in requirements/runtime.txt"


def test_the_app_image_is_built_here_and_tagged_with_the_version() -> None:
    for name in ("migrate", "worker", "exporter", "producer"):
        assert SERVICES[name]["build"] == "."
        assert SERVICES[name]["image"] == f"taskiq-exporter:{__version__}"


# Least privilege: no component connects as the PostgreSQL superuser, every password
# has to be set (no default such as "taskiq" or "admin"), no admin HTTP endpoints.
ROLES_SQL = (ROOT / "exporter" / "assets" / "postgres" / "roles.sql").read_text()
DEFAULT_ROLE = dict(re.findall(r"^\\set (owner|writer|service|reader) (\w+)$", ROLES_SQL, re.M))
REQUIRED = re.compile(r"\$\{(?P<var>[A-Z_]+):\?[^}]+\}")
DB_URL = re.compile(r"postgresql\+asyncpg://(?P<user>\w+):(?P<password>[^@]+)@postgres:5432/\w+")
DATASOURCES: list[dict[str, Any]] = yaml.safe_load(
    (ROOT / "grafana" / "provisioning" / "datasources" / "taskiq.yml").read_text()
)["datasources"]


def _database_user(service: dict[str, Any]) -> str | None:
    env = service.get("environment") or {}
    url = env.get("TASKIQ_EXPORTER_DATABASE_URL")
    if url is None:
        return env.get("PGUSER")
    match = DB_URL.fullmatch(url)
    assert match, url
    return match["user"]


def test_each_component_connects_with_its_own_role_never_the_superuser() -> None:
    assert set(DEFAULT_ROLE) == {"owner", "writer", "service", "reader"}
    superuser = SERVICES["postgres"]["environment"]["POSTGRES_USER"]
    users = {name: _database_user(s) for name, s in SERVICES.items()}
    postgres = next(d for d in DATASOURCES if d["type"] == "grafana-postgresql-datasource")
    users["grafana"] = postgres["user"]
    assert {name: user for name, user in users.items() if user} == {
        "migrate": DEFAULT_ROLE["owner"],
        "db-grants": DEFAULT_ROLE["owner"],
        "worker": DEFAULT_ROLE["writer"],
        "producer": DEFAULT_ROLE["writer"],
        "exporter": DEFAULT_ROLE["service"],
        "grafana": DEFAULT_ROLE["reader"],
    }
    assert superuser not in users.values()


def test_the_roles_come_from_the_shipped_sql_and_the_grants_follow_the_migration() -> None:
    postgres = SERVICES["postgres"]
    assert _mounts(postgres)["/taskiq-sql"] == "./exporter/assets/postgres"
    assert _mounts(postgres)["/docker-entrypoint-initdb.d"] == "./postgres/initdb"
    scripts = "\n".join(p.read_text() for p in (ROOT / "postgres" / "initdb").iterdir())
    assert "-f /taskiq-sql/roles.sql" in scripts
    for variable in re.findall(r'="\$(\w+)"', scripts):
        assert variable in postgres["environment"], variable
    grants = SERVICES["db-grants"]
    assert _mounts(grants)["/taskiq-sql"] == "./exporter/assets/postgres"
    assert grants["command"][-2:] == ["-f", "/taskiq-sql/grants.sql"]
    assert grants["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("worker", "exporter", "grafana"):
        depends = SERVICES[name]["depends_on"]
        assert depends["db-grants"]["condition"] == "service_completed_successfully", name


def _passwords() -> list[tuple[str, str]]:
    """(where, value) of every password the stack is configured with."""
    found = []
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key:
                found.append((f"{name}.{key}", str(value)))
            elif isinstance(value, str) and (match := DB_URL.fullmatch(value)):
                found.append((f"{name}.{key}", match["password"]))
    return found


def test_every_password_must_be_set_and_has_no_default() -> None:
    passwords = _passwords()
    assert len(passwords) >= 10
    for where, value in passwords:
        match = REQUIRED.fullmatch(value)
        assert match, f"{where}: {value!r} is not ${{VAR:?message}}"
    text = (ROOT / "docker-compose.yml").read_text()
    assert re.findall(r"\$\{\w*PASSWORD\w*:?-", text) == [], "a password with a default"
    postgres = next(d for d in DATASOURCES if d["type"] == "grafana-postgresql-datasource")
    assert postgres["secureJsonData"]["password"] == "$GRAFANA_READER_PASSWORD"
    assert "GRAFANA_READER_PASSWORD" in SERVICES["grafana"]["environment"]


def _variable(value: str) -> str:
    match = REQUIRED.fullmatch(value)
    assert match, value
    return match["var"]


def test_each_role_is_created_with_the_password_its_component_connects_with() -> None:
    postgres = SERVICES["postgres"]["environment"]
    scripts = "\n".join(p.read_text() for p in (ROOT / "postgres" / "initdb").iterdir())
    created = {
        kind: _variable(postgres[env])
        for kind, env in re.findall(r'-v (\w+)_password="\$(\w+)"', scripts)
    }
    assert set(created) == set(DEFAULT_ROLE)
    role_of = {user: kind for kind, user in DEFAULT_ROLE.items()}
    for name, service in SERVICES.items():
        env = service.get("environment") or {}
        if match := DB_URL.fullmatch(env.get("TASKIQ_EXPORTER_DATABASE_URL", "")):
            assert _variable(match["password"]) == created[role_of[match["user"]]], name
        if "PGUSER" in env:
            assert _variable(env["PGPASSWORD"]) == created[role_of[env["PGUSER"]]], name
    grafana = SERVICES["grafana"]["environment"]["GRAFANA_READER_PASSWORD"]
    assert _variable(grafana) == created["reader"]


def test_no_admin_endpoints_are_enabled() -> None:
    for name, service in SERVICES.items():
        command = service.get("command") or []
        flags = command if isinstance(command, list) else command.split()
        assert "--web.enable-lifecycle" not in flags, name
        assert "--web.enable-admin-api" not in flags, name


def test_the_exporter_answers_to_the_name_prometheus_scrapes() -> None:
    """The service refuses requests whose Host header it does not know."""
    allowed = SERVICES["exporter"]["environment"]["TASKIQ_EXPORTER_ALLOWED_HOSTS"].split(",")
    scraped = {
        _host(t) for job in PROMETHEUS["scrape_configs"] for sc in job["static_configs"]
        for t in sc["targets"]
    }  # fmt: skip
    assert "exporter" in scraped
    assert "exporter" in allowed


def test_the_exporter_api_needs_a_token_the_stack_cannot_start_without() -> None:
    token = SERVICES["exporter"]["environment"]["TASKIQ_EXPORTER_API_TOKEN"]
    assert re.fullmatch(r"\$\{TASKIQ_EXPORTER_API_TOKEN:\?[^}]+\}", token), token
    assert "--insecure-no-auth" not in SERVICES["exporter"]["command"]
