"""The simulator plus the raiser, in one child process (`python -m tests.benchmarks.simhost`).

Events are raised with `SimServer.raise_event` on the server's own loop: no SQL
round trip, so the raiser is as fast as the simulator can write frames. Its own
ceiling is measured by `raiser_alone` (a bare socket session that only drains).
Event names are `ev000` … `ev099`, owned by `ingres`, in database `demodb`.

For latency runs the text of each event is the raiser's `time.time()` taken
just before the raise, so the consumer can compute raise → delivery itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bridge.sim.server import SimServer
from bridge.sim.wire import SimClient
from tests.benchmarks.child import reply, serve_commands
from tests.benchmarks.stages import GcPauses

MAX_NAMES = 100
OWNER = "ingres"
DATABASE = "demodb"
# Backpressure: past HIGH unsent bytes on any registered session the raiser
# waits until every session is below LOW, so the simulator's per-session
# queue limit (which drops events, as Ingres does) is never reached.
_HIGH = 4 << 20
_LOW = 1 << 20
_CHUNK = 200


def event_name(index: int) -> str:
    """The name of the index-th benchmark event."""
    return f"ev{index:03d}"


def filler_text(i: int, length: int) -> bytes | None:
    """`length` bytes of text that start with the event's number (None for 0)."""
    if length == 0:
        return None
    head = f"{i}:".encode()
    return (head + b"x" * length)[:length]


class Raiser:
    """Raises events into a running SimServer, with backpressure."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.pauses = GcPauses().install()

    def _backlog(self) -> int:
        sessions = self.server._sessions.values()  # a benchmark may peek
        return max((s.buffered() for s in sessions if not s.closed), default=0)

    async def _drain(self) -> None:
        if self._backlog() <= _HIGH:
            await asyncio.sleep(0)
            return
        while self._backlog() > _LOW:  # noqa: ASYNC110 - polling is the point
            await asyncio.sleep(0.001)

    async def burst(self, command: dict[str, Any]) -> dict[str, Any]:
        """Raise `count` events round-robin over `names` names, as fast as allowed."""
        count, names, text = int(command["count"]), int(command["names"]), int(command["text"])
        texts = [filler_text(i, text) for i in range(min(count, 1000))]
        names_list = [event_name(i) for i in range(names)]
        before = self.server.stats()
        started = time.time()
        cpu0 = time.process_time()
        for i in range(count):
            self.server.raise_event(OWNER, names_list[i % names], texts[i % len(texts)])
            if i % _CHUNK == _CHUNK - 1:
                await self._drain()
        finished = time.time()
        cpu = time.process_time() - cpu0
        after = self.server.stats()
        return {"ok": True, "t0": started, "t1": finished, "cpu": cpu,
                "dropped": after["events_dropped"] - before["events_dropped"]}

    async def paced(self, command: dict[str, Any]) -> dict[str, Any]:
        """Raise `rate` events/s for `seconds`; each text is the raise time.

        With `trace`, the reply also has each event's text, how late its raise
        was against the schedule and when its frame was written to the
        session's socket (one registered session: the n-th write is the n-th
        event), for the stage breakdown (stages.py).
        """
        rate, seconds = float(command["rate"]), float(command["seconds"])
        names = int(command.get("names", 1))
        total = int(rate * seconds)
        names_list = [event_name(i) for i in range(names)]
        stamps: list[str] = []
        late: list[float] = []
        delivered: list[float] = []
        deliver = self.server._deliver  # a benchmark may peek
        if command.get("trace"):
            def traced(targets: Any, data: bytes) -> None:
                deliver(targets, data)
                delivered.append(time.time())
            self.server._deliver = traced  # type: ignore[method-assign]
        start = time.monotonic()
        sent = 0
        try:
            while sent < total:
                due = min(total, int((time.monotonic() - start) * rate) + 1)
                while sent < due:
                    stamp = repr(time.time())
                    if command.get("trace"):
                        stamps.append(stamp)
                        late.append(time.monotonic() - start - sent / rate)
                    self.server.raise_event(OWNER, names_list[sent % names], stamp.encode())
                    sent += 1
                await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
            # The event thread's last deliveries (polling is the point).
            while len(delivered) < len(stamps) and time.monotonic() < start + seconds + 5:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        finally:
            self.server._deliver = deliver  # type: ignore[method-assign]
        return {"ok": True, "raised": sent, "dropped": self.server.stats()["events_dropped"],
                "trace": {"stamps": stamps, "late": late, "delivered": delivered,
                          "gc": self.pauses.pauses}}

    async def raiser_alone(self, command: dict[str, Any]) -> dict[str, Any]:
        """The raiser's own ceiling: a burst to one session that only drains its socket."""
        client = await SimClient.connect(self.server.host, self.server.port)
        await client.ok(f"register dbevent {event_name(0)}")
        reader = client._reader  # drained raw: no frame parsing on the consumer side
        stop = asyncio.Event()

        async def drain() -> None:
            while not stop.is_set():
                if not await reader.read(1 << 20):
                    return

        task = asyncio.create_task(drain())
        try:
            result = await self.burst({"count": command["count"], "names": 1,
                                       "text": command.get("text", 0)})
        finally:
            stop.set()
            await client.close()
            task.cancel()
        return result

    async def registered(self, command: dict[str, Any]) -> dict[str, Any]:
        """How many sessions hold a registration for ev000."""
        db = self.server._database(DATABASE)
        return {"ok": True, "sessions": len(db.registered.get((OWNER, event_name(0)), set()))}

    async def stats(self, command: dict[str, Any]) -> dict[str, Any]:
        """The simulator's counters."""
        stats = self.server.stats()
        stats.pop("dbevents", None)
        return {"ok": True, **stats}


async def main() -> None:
    """Start the simulator, report its port, answer commands until told to quit."""
    server = SimServer("127.0.0.1", 0)
    await server.start()
    for i in range(MAX_NAMES):
        server.create_event(OWNER, event_name(i), DATABASE)
    raiser = Raiser(server)
    reply({"ok": True, "port": server.port})
    try:
        await serve_commands({
            "burst": raiser.burst, "paced": raiser.paced, "raiser_alone": raiser.raiser_alone,
            "registered": raiser.registered, "stats": raiser.stats,
        })
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
