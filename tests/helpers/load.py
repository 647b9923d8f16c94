"""A steady client for the fault tests.

``python -m tests.helpers.load RATE`` sends ``w:quick`` tasks of
tests.helpers.worker_app at RATE per second until a line (or end of file)
arrives on its stdin, shuts its broker down (which writes its pending rows) and
prints ``{"sent": N}``. :class:`Load` runs it from a test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from types import TracebackType
from typing import Self

from tests.helpers.processes import ROOT


class Load:
    """``with Load(env, rate) as load: ...; sent = load.stop()``."""

    def __init__(self, env: dict[str, str], rate: float) -> None:
        self.env = env
        self.rate = rate
        self.sent: int | None = None
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.load", str(self.rate)],
            env=self.env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        return self

    def stop(self) -> int:
        """Stop sending; the number of tasks sent, once the client has exited."""
        assert self._proc is not None
        if self.sent is None:
            out, _ = self._proc.communicate("stop\n", timeout=60)
            assert self._proc.returncode == 0, out
            self.sent = int(json.loads(out.strip().splitlines()[-1])["sent"])
        return self.sent

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


async def _run(rate: float) -> int:
    # Imported here: the broker is configured from this process's environment.
    from tests.helpers.worker_app import broker, quick

    await broker.startup()
    stop = asyncio.ensure_future(asyncio.to_thread(sys.stdin.readline))
    sent = 0
    started = time.monotonic()
    while not stop.done():
        await quick.kiq(sent)
        sent += 1
        delay = started + sent / rate - time.monotonic()
        if delay > 0:
            await asyncio.wait({stop}, timeout=delay)
    await broker.shutdown()
    return sent


if __name__ == "__main__":
    print(json.dumps({"sent": asyncio.run(_run(float(sys.argv[1])))}), flush=True)
