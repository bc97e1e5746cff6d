"""Waiting in tests: poll for the condition that matters, never sleep a fixed time and hope.

A fixed sleep is either too short on a loaded machine (a flaky test) or longer
than needed everywhere else (a slow one). Every test that waits for something
to happen waits for it here.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

# How often a condition is checked: short next to any timeout a test allows,
# long enough that checking costs nothing on a busy machine.
EVERY = 0.02


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], within: float, *, every: float = EVERY
) -> bool:
    """True as soon as `condition()` holds; False once `within` seconds passed without it.

    The condition may be a coroutine function (for one that asks a process or
    the broker). It is checked once more at the deadline, so a slow check
    never loses the last chance.
    """
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)


async def while_progressing(
    condition: Callable[[], bool], progress: Callable[[], float], stall: float,
    *, every: float = EVERY,
) -> bool:
    """True as soon as `condition()` holds; False once `progress()` stood still `stall` seconds.

    For working through a pile (events delivered, rows drained): how long that
    takes depends on how busy the machine is, so a fixed total is either flaky
    under load or needlessly long; what must never happen is that the work
    stops. The test's own timeout mark still bounds the whole.
    """
    last, since = progress(), time.monotonic()
    while not condition():
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= stall:
            return condition()
        await asyncio.sleep(every)
    return True


def wait_until(condition: Callable[[], bool], within: float, *, every: float = EVERY) -> bool:
    """`eventually` for threads and synchronous tests."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True
