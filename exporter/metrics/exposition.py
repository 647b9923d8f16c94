"""Text exposition of merged families, byte for byte what prometheus_client writes.

prometheus_client formats every sample on every scrape: escaping and sorting its
labels is most of a scrape's cost on a host with thousands of series. A series'
line up to its value never changes, so each is rendered once, by
prometheus_client itself (a batch of zero-valued samples), and kept; a scrape
then only formats the values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from exporter.metrics.merge_plan import Family, SampleKey

_ZERO = " 0.0"
_MEMO_LIMIT = 100_000


class UnexpectedLayout(Exception):
    """prometheus_client's output for a family did not split into one line per sample."""


class _Families(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def to_metric(family: Family, keys: Sequence[SampleKey], values: Sequence[float]) -> Metric:
    metric = Metric(family.name, _utf8(family.help), family.kind)
    for (name, labels), value in zip(keys, values, strict=True):
        metric.add_sample(name, {k: _utf8(v) for k, v in labels}, value)
    return metric


def _utf8(text: str) -> str:
    """A lone surrogate (a process's invalid name) would fail the whole exposition."""
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def render_metrics(metrics: Iterable[Metric], *, openmetrics_format: bool) -> str:
    """prometheus_client's exposition of these families (OpenMetrics without # EOF)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(metrics))
    if not openmetrics_format:
        return generate_latest(registry).decode()
    text: str = openmetrics.generate_latest(registry).decode()
    return text.removesuffix("# EOF\n")


class Exposition:
    """Renders merged families in the text format or OpenMetrics; not thread-safe."""

    def __init__(self, *, openmetrics_format: bool) -> None:
        self.openmetrics_format = openmetrics_format
        self._prefixes: dict[tuple[str, SampleKey], str] = {}
        self._headers: dict[tuple[str, str, str], str] = {}
        self._values: dict[float, str] = {0.0: "0.0\n"}
        # name -> (the family's key list, header, prefixes): a merge plan's key list
        # is the same object from scrape to scrape until the plan changes.
        self._last: dict[str, tuple[list[SampleKey], str, list[str]]] = {}

    def render(self, families: Iterable[Family]) -> str:
        parts: list[str] = []
        for family in families:
            last = self._last.get(family.name)
            if last is not None and last[0] is family.keys:
                _, header, prefixes = last
            else:
                header, prefixes = self._lines(family)
                self._last[family.name] = (family.keys, header, prefixes)
            parts.append(header)
            parts.extend(map(str.__add__, prefixes, self._format(family)))
        return "".join(parts)

    def _format(self, family: Family) -> list[str]:
        if not family.summed:  # may hold -0.0, which a float-keyed memo would print as 0.0
            return [floatToGoString(v) + "\n" for v in family.values]
        memo = self._values
        out: list[str | None] = list(map(memo.get, family.values))
        if None not in out:
            return out  # type: ignore[return-value]
        if len(memo) > _MEMO_LIMIT:
            memo.clear()
            memo[0.0] = "0.0\n"
        done = []
        for text, value in zip(out, family.values, strict=True):
            if text is None:
                text = floatToGoString(value) + "\n"
                if value == value:  # NaN never hits a dict
                    memo[value] = text
            done.append(text)
        return done

    def _lines(self, family: Family) -> tuple[str, list[str]]:
        header = self._headers.get((family.name, family.kind, family.help))
        try:
            if header is None:
                raise KeyError(family.name)
            return header, [self._prefixes[(family.name, key)] for key in family.keys]
        except KeyError:
            return self._learn(family)

    def _learn(self, family: Family) -> tuple[str, list[str]]:
        missing = [k for k in family.keys if (family.name, k) not in self._prefixes]
        text = render_metrics(
            [to_metric(family, missing, [0.0] * len(missing))],
            openmetrics_format=self.openmetrics_format,
        )
        lines = text.splitlines(keepends=True)
        head = 0
        while head < len(lines) and lines[head].startswith("#"):
            head += 1
        samples = lines[head:]
        if len(samples) != len(missing) or not all(
            line.endswith(_ZERO + "\n") and not line.startswith("#") for line in samples
        ):
            raise UnexpectedLayout(family.name)
        header = "".join(lines[:head])
        self._headers[(family.name, family.kind, family.help)] = header
        for key, line in zip(missing, samples, strict=True):
            self._prefixes[(family.name, key)] = line[: -len(_ZERO) - 1] + " "
        return header, [self._prefixes[(family.name, key)] for key in family.keys]
