"""Is a change to the middleware faster? Bare taskiq, the middleware and variants of it,
interleaved in short blocks.

    python -m benchmarks.bench_variants [--tasks 10000] [--rounds 30]

bench_middleware's workload (InMemoryBroker with await_inplace, no-op tasks, the
multiprocess metrics directory set, the PostgreSQL store), in blocks of
``--tasks`` tasks: each round runs bare taskiq, MonitoringMiddleware as it is and
each variant (VARIANTS, below), in a rotating order.
It prints each one's ratio to bare taskiq and each variant's ratio to the
middleware in the same round: the median and quartiles over the rounds. On these
shared machines a variant's median ratio to the middleware moves by about ±0.015
between runs of 30 rounds: smaller effects need more rounds, or an instruction
count (bench_instructions).

The variants here are two measured on 2026-11-29 (see the README), kept so that
the figures can be reproduced; add a variant to try another idea.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from time import time_ns

# As in a real worker: the directory exists before prometheus_client is imported.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="texp-bench-"))

from taskiq import BrokerMessage, TaskiqFormatter, TaskiqMessage, TaskiqMiddleware

from benchmarks.bench_middleware import run, truncate
from benchmarks.options import add_server_url
from benchmarks.scratch import rotation, scratch_database
from exporter import MonitoringMiddleware
from exporter.middleware.labels import SENT_AT_LABEL

TRUNCATE_EVERY = 5  # rounds


class _StampingFormatter(TaskiqFormatter):
    """The broker's formatter, stamping the send-time label as it serialises."""

    def __init__(self, inner: TaskiqFormatter) -> None:
        self.inner = inner

    def dumps(self, message: TaskiqMessage) -> BrokerMessage:
        message.labels[SENT_AT_LABEL] = time_ns() // 1000
        return self.inner.dumps(message)

    def loads(self, message: bytes) -> TaskiqMessage:
        return self.inner.loads(message)


class FormatterStamp(MonitoringMiddleware):
    """No pre_send hook (taskiq then does not dispatch one): the label is stamped by
    a wrapper around the broker's formatter."""

    pre_send = TaskiqMiddleware.pre_send  # type: ignore[assignment]

    async def startup(self) -> None:
        await super().startup()
        self.broker.formatter = _StampingFormatter(self.broker.formatter)


Factory = Callable[[str], TaskiqMiddleware]
VARIANTS: dict[str, Factory] = {
    "label stamped by the formatter": lambda url: FormatterStamp(database_url=url),
    "a tenth held (5 ms flushes, 50 ms applies)": lambda url: MonitoringMiddleware(
        database_url=url, flush_interval_seconds=0.005, metrics_flush_interval_seconds=0.05
    ),
}


def _summary(ratios: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    return f"{median:6.3f} ({q1:.3f}-{q3:.3f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_url(parser)
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks in a block")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    if args.rounds < 2:
        raise SystemExit("--rounds must be at least 2 (quartiles)")
    async with scratch_database(args.server_url, "variants") as url:
        configs: dict[str, Callable[[], list[TaskiqMiddleware]]] = {
            "bare taskiq": lambda: [],
            "MonitoringMiddleware": lambda: [MonitoringMiddleware(database_url=url)],
        }
        for name, factory in VARIANTS.items():
            configs[name] = lambda factory=factory: [factory(url)]  # type: ignore[misc]
        rates: dict[str, list[float]] = {name: [] for name in configs}
        await run(2_000, [])  # warm up imports and the loop
        for round_no in range(args.rounds):
            for name in rotation(list(configs), round_no):
                rate, _ = await run(args.tasks, configs[name]())
                rates[name].append(rate)
            if round_no % TRUNCATE_EVERY == TRUNCATE_EVERY - 1:
                await truncate(url.replace("+asyncpg", ""))
    bare, ours = rates["bare taskiq"], rates["MonitoringMiddleware"]
    print(
        f"{args.tasks} no-op tasks a block x {args.rounds} rounds, InMemoryBroker, PostgreSQL"
        f" store, PROMETHEUS_MULTIPROC_DIR set (python {sys.version.split()[0]});"
        f" bare taskiq {statistics.median(bare):,.0f} tasks/s"
    )
    print(f"{'configuration':44} {'to bare: median (quartiles)':>28} {'to the middleware':>24}")
    for name, values in rates.items():
        if name == "bare taskiq":
            continue
        to_bare = _summary([v / b for v, b in zip(values, bare, strict=True)])
        to_ours = (
            _summary([v / o for v, o in zip(values, ours, strict=True)])
            if name != "MonitoringMiddleware"
            else ""
        )
        print(f"{name:44} {to_bare:>28} {to_ours:>24}")


if __name__ == "__main__":
    asyncio.run(main())
