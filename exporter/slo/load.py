"""Reading an SLO file: YAML in, a validated ``SloFile`` out, or one error that
names the line and the field of every problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from exporter.slo.model import Loc, SloFile


class SloConfigError(ValueError):
    """The SLO file cannot be used; ``str()`` has one ``file:line: field: problem`` a line."""


def yaml_module() -> Any:
    # pyyaml ships with the "slo" extra only: the exporter's other commands run without it.
    try:
        import yaml
    except ImportError:
        raise SloConfigError(
            "reading an SLO file needs PyYAML: pip install 'taskiq-exporter[slo]'"
        ) from None
    return yaml


def _line(root: Any, loc: Loc) -> int:
    """The 1-based line of the deepest YAML node ``loc`` reaches."""
    node = root
    for part in loc:
        child = None
        if node.id == "sequence" and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        elif node.id == "mapping" and isinstance(part, str):
            child = next((v for k, v in node.value if k.value == part), None)
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


def _where(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text or "(the file)"


def parse(text: str, *, source: str = "<slos>") -> SloFile:
    """Validate ``text``, the SLO file ``source`` (its name, for messages)."""
    yaml = yaml_module()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise SloConfigError(f"{source}{line}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise SloConfigError(f"{source}:1: expected a mapping with a `slos:` list")
    try:
        cfg = SloFile.model_validate(data)
    except ValidationError as exc:
        # pydantic may add a validator's name to a location ("function-after[...]"):
        # only names and list indexes lead to a YAML node.
        problems: list[tuple[Loc, str]] = [
            (
                tuple(p for p in e["loc"] if isinstance(p, int) or p.isidentifier()),
                e["msg"].removeprefix("Value error, "),
            )
            for e in exc.errors()
        ]
    else:
        problems = cfg.problems()
        if not problems:
            return cfg
    raise SloConfigError(
        "\n".join(f"{source}:{_line(root, loc)}: {_where(loc)}: {msg}" for loc, msg in problems)
    )


def load(path: Path) -> SloFile:
    """The SLO file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SloConfigError(f"{path}: {exc.strerror or exc}") from None
    return parse(text, source=str(path))
