"""``python -m exporter.demo.producer``: send the demo workload to Redis."""

from __future__ import annotations

import argparse
import asyncio
import time


async def produce(rate: float, total: int | None) -> int:
    from exporter.demo.redis_app import broker, tasks
    from exporter.demo.tasks import send_random

    await broker.startup()
    sent = 0
    try:
        started = time.monotonic()
        while total is None or sent < total:
            await send_random(tasks, sent)
            sent += 1
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await broker.shutdown()
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="tasks per second")
    parser.add_argument("--total", type=int, default=None, help="stop after N tasks")
    args = parser.parse_args()
    sent = asyncio.run(produce(args.rate, args.total))
    print(f"sent {sent} tasks")


if __name__ == "__main__":
    main()
