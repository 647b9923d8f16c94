"""Waiting for a condition: :func:`wait_for` polls from a test that may block (real
processes), :func:`eventually` from an async test, whose loop must keep running the
code under test while it waits."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


def wait_for(
    check: Callable[[], bool],
    what: str,
    seconds: float = 120,
    *,
    interval: float = 0.2,
    ignoring: tuple[type[Exception], ...] = (),
) -> None:
    """Poll until ``check()``; fail naming ``what`` after ``seconds`` (generous
    timeouts: the machine is shared). Errors in ``ignoring`` count as not yet."""
    deadline = time.monotonic() + seconds
    error: Exception | None = None
    while True:
        try:
            if check():
                return
        except ignoring as exc:
            error = exc
        if time.monotonic() > deadline:
            last = f" (last error: {error!r})" if error is not None else ""
            raise AssertionError(f"{what}: not met within {seconds} s{last}")
        time.sleep(interval)


async def eventually(
    check: Callable[[], Awaitable[bool] | bool],
    what: str,
    seconds: float = 15,
    *,
    interval: float = 0.05,
) -> None:
    """:func:`wait_for` for async tests: ``check`` may be a coroutine function."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {seconds} s")
        await asyncio.sleep(interval)
