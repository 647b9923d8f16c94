"""The package's layers point one way (drawn in docs/design.md): the middleware
uses the store and the metrics, never the other way round; the service and the
CLI sit on top; the shared modules at the bottom import nothing of ours above them."""

from __future__ import annotations

import ast
from pathlib import Path

import exporter

PACKAGE = Path(exporter.__file__).parent
BOTTOM = {"rows", "text", "processes", "resources"}
# Each unit may import itself and what is listed here, nothing else of ours.
ALLOWED: dict[str, set[str]] = {
    "rows": set(),
    "text": set(),
    "processes": set(),
    "resources": set(),
    "settings": {"text"},
    "events": BOTTOM,
    "store": BOTTOM | {"settings", "events"},
    "metrics": BOTTOM | {"settings"},
    # The SLO rules generator: from the metric names and the histograms' buckets.
    "slo": BOTTOM | {"settings", "metrics"},
    # The broker's queues, read for the service's /metrics.
    "brokers": BOTTOM | {"settings", "metrics"},
    "maintenance": BOTTOM | {"settings", "events", "store"},
    "migrations": BOTTOM | {"settings", "store"},
    "middleware": BOTTOM | {"settings", "events", "store", "metrics"},
    "service": BOTTOM
    | {
        "__init__",
        "settings",
        "events",
        "store",
        "metrics",
        "maintenance",
        "middleware",
        "brokers",
    },
    "demo": BOTTOM | {"__init__", "settings", "store", "maintenance", "middleware"},
    "cli": set(),  # on top: anything
    "app": {"service"},
    "__init__": {"middleware", "rows", "settings"},
    "__main__": {"cli"},
}


def unit_of(module: str) -> str:
    """``exporter.store.pg_writer`` -> ``store``; ``exporter`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def is_module(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def imports_of(path: Path) -> set[str]:
    """Every ``exporter...`` module a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "exporter":  # a submodule, or a name of the package's own
                found.update(
                    f"exporter.{a.name}" if is_module(a.name) else "exporter" for a in node.names
                )
            elif node.module.split(".")[0] == "exporter":
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "exporter")
    return found


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        unit = relative.parts[0].removesuffix(".py")
        assert unit in ALLOWED, f"{relative}: a new unit, give it a place in ALLOWED"
        if unit == "cli":
            continue
        for target in sorted(imports_of(path)):
            to = unit_of(target)
            if to != unit and to not in ALLOWED[unit]:
                out.append(f"{relative} imports {target}")
    return out


def test_layers_point_one_way() -> None:
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    source = "from exporter.middleware.sanitize import cap_text\nimport exporter.cli\n"
    (tmp_path / "x.py").write_text(source)
    assert imports_of(tmp_path / "x.py") == {"exporter.middleware.sanitize", "exporter.cli"}
    assert unit_of("exporter.middleware.sanitize") not in ALLOWED["store"]
    (tmp_path / "y.py").write_text("from exporter import MonitoringMiddleware\n")
    assert imports_of(tmp_path / "y.py") == {"exporter"}
    (tmp_path / "z.py").write_text("from exporter import rows\n")
    assert imports_of(tmp_path / "z.py") == {"exporter.rows"}
