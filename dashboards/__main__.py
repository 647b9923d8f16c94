"""``python -m dashboards [--check]``: regenerate the dashboards and the rules file."""

from __future__ import annotations

import argparse
import sys

from dashboards.render import ROOT, stale, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a committed artefact is out of date"
    )
    args = parser.parse_args(argv)
    paths = stale() if args.check else write()
    for path in paths:
        verb = "out of date" if args.check else "written"
        sys.stdout.write(f"{path.relative_to(ROOT)}: {verb}\n")
    return 1 if args.check and paths else 0


if __name__ == "__main__":
    sys.exit(main())
