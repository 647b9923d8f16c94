"""``taskiq-exporter dashboards export`` and ``rules export``: the shipped
Grafana dashboards and Prometheus rules, written where a deployment loads them.

Users need no grafanalib: the files are generated in the repository
(``python -m dashboards``) and ship inside the package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from exporter import resources
from exporter.slo.load import load
from exporter.slo.render import RULES_NAME, render_slo_rules


def register(sub: Any) -> None:
    boards = sub.add_parser("dashboards", help="the Grafana dashboards (JSON)")
    board_actions = boards.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = board_actions.add_parser(
        "export", help="write the dashboards' JSON into DIR (Grafana file provisioning)"
    )
    _add_target(export)
    export.set_defaults(run=run_dashboards)

    rules = sub.add_parser("rules", help="the Prometheus alerting and recording rules")
    rule_actions = rules.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = rule_actions.add_parser("export", help=f"write {_rules_name()} into DIR")
    _add_target(export)
    export.add_argument(
        "--job",
        default=resources.DEFAULT_JOB,
        help="the Prometheus scrape job of the exporter service, which the rules select on "
        f"(default {resources.DEFAULT_JOB})",
    )
    export.add_argument(
        "--runbook-url",
        default=resources.DEFAULT_RUNBOOK_URL,
        help="the runbook each alert links to, without the #anchor "
        f"(default {resources.DEFAULT_RUNBOOK_URL}: the service's own GET /runbook)",
    )
    export.add_argument(
        "--grafana-url",
        default=resources.DEFAULT_GRAFANA_URL,
        help="the Grafana that loads the dashboards, which each alert's dashboard_url opens "
        f"(default {resources.DEFAULT_GRAFANA_URL}: docker compose's)",
    )
    export.add_argument(
        "--slos",
        type=Path,
        metavar="FILE",
        help="an SLO file (YAML, docs/slo.md): also write taskiq-slo.rules.yml, its "
        "burn-rate alerts and recording rules (needs the slo extra: PyYAML)",
    )
    export.set_defaults(run=run_rules)


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, metavar="DIR", help="created if missing")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file in DIR is missing or differs",
    )


def _rules_name() -> str:
    return resources.RULES_FILE.rsplit("/", 1)[-1]


def run_dashboards(args: argparse.Namespace, _extra: list[str]) -> int:
    return _export(args.directory, resources.dashboards(), check=args.check)


def run_rules(args: argparse.Namespace, _extra: list[str]) -> int:
    try:
        # The SLO rules are rendered, not rewritten: they take the base as rules_text checks it.
        rules = resources.rules_text(
            job=args.job, runbook_url=args.runbook_url, grafana_url=args.grafana_url
        )
        files = {_rules_name(): rules}
        if args.slos is not None:
            files[RULES_NAME] = render_slo_rules(
                load(args.slos),
                job=args.job,
                runbook_url=args.runbook_url,
                grafana_url=resources.check_grafana_url(args.grafana_url),
            )
    except ValueError as exc:  # SloConfigError too: one line per problem
        print(f"taskiq-exporter rules export: {exc}", file=sys.stderr)
        return 2
    return _export(args.directory, files, check=args.check)


def _export(directory: Path, files: dict[str, str], *, check: bool) -> int:
    """Write (or with ``check``, compare) ``files`` in ``directory``; one line per file."""
    stale = [
        name
        for name, content in files.items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != content
    ]
    for name in files:
        path = directory / name
        if check:
            print(f"{path}: {'out of date' if name in stale else 'up to date'}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if name in stale:
                path.write_text(files[name], encoding="utf-8")
            print(f"{path}: {'written' if name in stale else 'unchanged'}")
    return 1 if check and stale else 0
