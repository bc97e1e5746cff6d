"""The process's signals, handled in one place, for `run` and `tail` alike.

SIGTERM, SIGINT and SIGHUP all mean "stop": the first sets `stop` (the
command winds down in order: `run` stops intake and drains); a second one,
while that goes on, sets `force` (exit at once with 128 + its number, see
bridge.exits; `run` leaves what is unconfirmed in the spool). SIGHUP is not
a reload: a bridge has nothing to reload that a restart would not do better,
and its default action would kill the process without a drain.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any, Final

log = logging.getLogger("bridge.signals")

# How often `poll_until` looks at its condition.
_POLL_INTERVAL: Final = 0.05


class Signals:
    """Handles SIGTERM, SIGINT and SIGHUP on `loop` from construction on (see the module)."""

    HANDLED: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        stopping: str = "stopping intake and draining",
        forcing: str = "unconfirmed events stay in the spool",
    ) -> None:
        """`stopping` says what the first signal starts, `forcing` what exiting at once leaves."""
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        self.forced_by: int | None = None
        self._stopping = stopping
        self._forcing = forcing
        for signum in self.HANDLED:
            loop.add_signal_handler(signum, self._received, signum)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.stop.is_set():
            log.info("received %s: %s (send it again to exit at once)", name, self._stopping)
            self.stop.set()
        elif not self.force.is_set():
            log.warning("received %s again: exiting now; %s", name, self._forcing)
            self.forced_by = signum
            self.force.set()


async def poll_until(condition: Callable[[], bool], within: float, force: asyncio.Event) -> None:
    """Wait until `condition` holds, `within` seconds pass or `force` is set.

    Polled on the loop rather than joined on a worker thread: a forced exit
    must not wait for a thread stuck in an Ingres call (`asyncio.run` waits for
    its executor's threads as it ends).
    """
    deadline = asyncio.get_running_loop().time() + within
    while not condition() and not force.is_set():
        if asyncio.get_running_loop().time() >= deadline:
            return
        with suppress(TimeoutError):
            async with asyncio.timeout(_POLL_INTERVAL):
                await force.wait()


async def unless_stopped(work: Coroutine[Any, Any, object], stop: asyncio.Event) -> bool:
    """Run `work` unless `stop` is set first (then cancel it); True when it completed.

    What `work` raised is raised here.
    """
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        return False
    task.result()
    return True
