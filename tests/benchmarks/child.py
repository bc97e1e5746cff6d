"""Plumbing shared by the benchmark's child processes and their driver.

A child prints one JSON line per reply on stdout and reads one JSON command per
line on stdin; logs go to stderr. `/proc` readings give a child's own CPU time
and memory, so each figure is that process's alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def reply(message: Mapping[str, Any]) -> None:
    """Write one reply line on stdout."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve_commands(handlers: Mapping[str, Handler]) -> None:
    """Answer commands from stdin until `quit` or end of input.

    Handlers run one at a time, in order: the driver waits for each reply.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        command: dict[str, Any] = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            reply({"ok": True})
            return
        try:
            answer = await handlers[op](command)
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply(answer)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process `pid` has used so far (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def broker_pid() -> int | None:
    """The local RabbitMQ node's process (beam.smp, the system node if several run)."""
    found: list[tuple[bool, int]] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "beam.smp":
                continue
            system = b"/var/lib/rabbitmq" in (proc / "cmdline").read_bytes()
        except OSError:
            continue
        found.append((system, int(proc.name)))
    return max(found)[1] if found else None


def memory_mb(pid: int) -> dict[str, float]:
    """Resident set size now (VmRSS) and at its peak (VmHWM) of `pid`, in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return {"rss_mb": values.get("VmRSS", 0.0), "hwm_mb": values.get("VmHWM", 0.0)}


async def wait_count(read: Callable[[], float], target: int, within: float) -> float | None:
    """Poll `read()` every 5 ms until it reaches `target`; the wall time then, or None."""
    import time

    deadline = time.monotonic() + within
    while read() < target:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.005)
    return time.time()
