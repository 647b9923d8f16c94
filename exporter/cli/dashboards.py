"""``taskiq-exporter dashboards``: regenerate the dashboards and alert rules.

The generators live in the repository's top-level ``dashboards`` package (they
are development tools, not part of the installed library): run this from a
checkout.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "dashboards", help="regenerate dashboards/*.json and the Prometheus rules (checkout only)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, _extra: list[str]) -> int:
    from exporter.store.migrate import PROJECT_ROOT

    if (PROJECT_ROOT / "dashboards").is_dir() and str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    try:
        generator = importlib.import_module("dashboards.__main__")
    except ModuleNotFoundError:
        print(
            "taskiq-exporter dashboards: run it from a checkout of the repository "
            "(the `dashboards` package is not installed)",
            file=sys.stderr,
        )
        return 2
    code: int = generator.main(["--check"] if args.check else [])
    return code
