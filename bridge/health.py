"""What the bridge knows about its own health, for the /healthz and /readyz probes.

Two separate questions, as Kubernetes asks them:

* alive: are the pipeline's tasks all still running? A task that has ended (it
  crashed, or returned when it never should) means the process is stuck half
  dead and should be restarted.
* ready: is every component connected? "ingres" (the DBEvent session is
  registered) and "amqp" (connected, the exchange exists). Not ready is normal
  during an outage, which the bridge rides out on its own; it is no reason to
  restart.

Components report with `set()`; the probes read `alive()` and `ready()`. All of it
runs on the event loop's thread, so no locking.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.masking import redact

__all__ = ["COMPONENTS", "Health"]

COMPONENTS: tuple[str, ...] = ("ingres", "amqp")


@dataclass
class _State:
    ok: bool
    reason: str
    since: float  # time.time() of the last change of `ok`


class Health:
    """Component readiness and task liveness, updated by the components, read by the probes."""

    def __init__(self, components: Iterable[str] = COMPONENTS) -> None:
        """Track `components`; each starts not ready until it reports."""
        now = time.time()
        self._states = {name: _State(False, "not reported yet", now) for name in components}
        self._tasks: list[asyncio.Task[Any]] = []
        # Active/standby mode: "active" or "standby", shown on /readyz; None otherwise.
        self.role: str | None = None

    def set(self, component: str, ok: bool, reason: str = "") -> None:
        """Record whether `component` works now, and why not when it does not.

        `reason` is shown on /readyz; URL passwords in it are masked, but keep
        it to the kind of failure ("connection refused"), not raw data.
        """
        if component not in self._states:
            raise KeyError(f"unknown health component {component!r}")
        old = self._states[component]
        since = old.since if old.ok == ok else time.time()
        self._states[component] = _State(ok, "" if ok else redact(reason), since)

    def watch_tasks(self, tasks: Iterable[asyncio.Task[Any]]) -> None:
        """Count `tasks` as the pipeline: alive only while every one of them runs."""
        self._tasks.extend(tasks)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """(True when every component is ok, a JSON-able description of each)."""
        components = {
            name: {"ok": s.ok, "reason": s.reason, "since": _iso(s.since)}
            for name, s in self._states.items()
        }
        ok = all(s.ok for s in self._states.values())
        body: dict[str, Any] = {"status": "ready" if ok else "not ready", "components": components}
        if self.role is not None:
            body["role"] = self.role
        return ok, body

    def alive(self) -> tuple[bool, dict[str, Any]]:
        """(True while no watched task has ended, a JSON-able description of each task)."""
        tasks = {_task_name(t, i): _task_state(t) for i, t in enumerate(self._tasks)}
        ok = all(state == "running" for state in tasks.values())
        return ok, {"status": "alive" if ok else "dead", "tasks": tasks}


def _task_name(task: asyncio.Task[Any], index: int) -> str:
    """The task's name; asyncio's default names (Task-12) say nothing, so index them."""
    name = task.get_name()
    return f"{name}#{index}" if name.startswith("Task-") else name


def _task_state(task: asyncio.Task[Any]) -> str:
    """running, cancelled, exited, or failed: <exception type> (never its message)."""
    if not task.done():
        return "running"
    if task.cancelled():
        return "cancelled"
    # Only the type: an exception's text may carry data or secrets, and the
    # traceback belongs in the log. Note that exception() marks it retrieved,
    # so asyncio will not log it at garbage collection: whoever supervises the
    # tasks must log their failures (it has to act on them anyway).
    exc = task.exception()
    return "exited" if exc is None else f"failed: {type(exc).__name__}"


def _iso(stamp: float) -> str:
    """Unix time to an ISO-8601 UTC string, seconds precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
