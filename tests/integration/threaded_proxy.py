"""A :class:`~tests.tcp_proxy.TcpProxy` on its own event loop thread, for tests
that drive real processes with blocking calls while the proxy keeps forwarding."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

from tests.tcp_proxy import TcpProxy


class ThreadedProxy:
    """``with ThreadedProxy(host, port) as proxy:`` forwards until the block ends;
    ``cut()`` and ``restore()`` return once the listener is closed or open again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._proxy = TcpProxy(target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def __enter__(self) -> Self:
        self._thread.start()
        self._call(self._proxy.start())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self._call(self._proxy.cut())
        with contextlib.suppress(Exception):
            self._call(self._cancel_connections())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    @staticmethod
    async def _cancel_connections() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        return self._proxy.port

    def cut(self) -> None:
        """Close the listener and every open connection: the database is gone."""
        self._call(self._proxy.cut())

    def restore(self) -> None:
        """Listen again on the same port."""
        self._call(self._proxy.restore())

    def url(self, database: str) -> str:
        return self._proxy.url(database)
