"""``python -m benchmarks``: each benchmark (module ``bench_*``), the command that runs it
and its docstring's first line, read from the source (importing one may set it up)."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

HERE = Path(__file__).parent


def summary(path: Path) -> str:
    """The first line of the module docstring of ``path``, without importing it."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    return doc.splitlines()[0] if doc else ""


def index() -> list[tuple[str, str]]:
    """(command, summary) of every benchmark, by name."""
    names = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.ispkg)
    return [
        (f"python -m benchmarks.{name}", summary(HERE / f"{name}.py"))
        for name in names
        if name.startswith("bench_")
    ]


def main() -> None:
    rows = index()
    width = max(len(command) for command, _ in rows)
    for command, line in rows:
        print(f"{command:{width}}  {line}")


if __name__ == "__main__":
    main()
