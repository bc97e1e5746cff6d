"""bridge.openapi.Session scenarios run in a child process, on the library II_SYSTEM names.

`python -m tests.integration.openapi_child SCENARIO` prints one JSON report.
pyngres loads one library per process, so the same scenario runs here on the
simulator's library or on a real one (tests/integration/test_openapi.py). Each
starts its own DBMS simulator in-process: the server side needs no library.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bridge import openapi
from bridge.openapi import Session, SessionTimeoutError
from bridge.sim.server import ServerThread
from tests.faults.proxy import TcpProxy
from tests.polling import wait_until

Json = dict[str, Any]


def half_open() -> Json:
    """A probe times out on a half-open connection; the session is then closed.

    Meant for PYTHONMALLOC=debug, which fills freed memory with 0xDD: should the
    library complete an operation whose parameter block Python has freed, it
    calls 0xDDDD... as the block's callback and the process dies of SIGSEGV
    instead of reporting.
    """
    with ServerThread() as sim, TcpProxy("127.0.0.1", sim.port) as proxy:
        session = Session(sim.target().replace(f",{sim.port}", f",{proxy.port}"), timeout_s=5.0)
        session.open()
        proxy.pause()  # half-open: nothing flows, nothing closes
        try:
            session.probe(0.3)
            timed_out = False
        except SessionTimeoutError:
            timed_out = True
        gc.collect()
        garbage = [bytearray(200) for _ in range(1000)]  # reuse whatever was freed
        proxy.resume()
        began = time.monotonic()
        session.close()
        return {
            "timed_out": timed_out,
            "close_s": round(time.monotonic() - began, 2),
            "abandoned": len(openapi._ABANDONED),  # sessions whose abort never completed
            "garbage": len(garbage),
        }


def half_open_for_good() -> Json:
    """As `half_open`, but the connection stays dead while the session closes.

    The real library's abort then never completes; a new session afterwards
    must work, although its IIapi_wait dispatches whatever the old connection
    left behind once the proxy forwards again.
    """
    with ServerThread() as sim, TcpProxy("127.0.0.1", sim.port) as proxy:
        sim.create_event("ingres", "ev")
        session = Session(sim.target().replace(f",{sim.port}", f",{proxy.port}"), timeout_s=2.0)
        session.open()
        session.register("ev")
        proxy.pause()
        try:
            session.probe(0.3)
            timed_out = False
        except SessionTimeoutError:
            timed_out = True
        gc.collect()
        garbage = [bytearray(200) for _ in range(1000)]
        began = time.monotonic()
        session.close()
        close_s = round(time.monotonic() - began, 2)
        proxy.resume()
        after = Session(sim.target(), timeout_s=10.0)
        after.open()
        after.register("ev")
        sim.raise_event("ingres", "ev", b"after")
        event = after.next_event(5000)
        after.probe(5.0)
        after.close()
        return {
            "timed_out": timed_out,
            "close_s": close_s,
            "abandoned": len(openapi._ABANDONED),
            "caught_after": event.text.decode() if event and event.text else None,
            "garbage": len(garbage),
        }


def raised_between_registrations() -> Json:
    """An event raised right after one REGISTER, read by the library during the next."""
    with ServerThread() as sim:
        sim.create_event("ingres", "ev1")
        sim.create_event("ingres", "ev2")
        session = Session(sim.target(), timeout_s=10.0)
        session.open()
        try:
            session.register("ev1")
            delivered = sim.stats()["events_delivered"]
            targets = sim.raise_event("ingres", "ev1", b"right after")
            # In the session's socket, unread, before the next statement reads it.
            sent = wait_until(lambda: sim.stats()["events_delivered"] > delivered, 10)
            session.register("ev2")
            events = []
            while (event := session.next_event(0)) is not None:
                events.append({"name": event.name, "text": (event.text or b"").decode()})
            return {"targets": targets, "sent": sent, "events": events}
        finally:
            session.close()


SCENARIOS: dict[str, Callable[[], Json]] = {
    "half_open": half_open,
    "half_open_for_good": half_open_for_good,
    "raised_between_registrations": raised_between_registrations,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]]()), flush=True)
