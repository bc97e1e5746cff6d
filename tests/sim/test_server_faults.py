"""Fault controls of the DBMS simulator: in-process, via CONTROL frames, in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest

from bridge.sim import control, wire
from bridge.sim.server import ServerThread, SimServer
from bridge.sim.wire import SimClient
from tests.polling import eventually


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer() as server:
        server.create_event("ingres", "ev")
        yield server


async def _connect_when_back(sim: SimServer) -> SimClient:
    clients: list[SimClient] = []

    async def connected() -> bool:
        with contextlib.suppress(ConnectionRefusedError):
            clients.append(await sim.session())
        return bool(clients)

    assert await eventually(connected, 10), "the server did not come back"
    return clients[0]


async def test_drop_sessions_closes_every_socket(sim: SimServer) -> None:
    clients = [await sim.session() for _ in range(3)]
    await clients[0].ok("register dbevent ev")
    assert sim.drop_sessions() == 3
    for client in clients:
        assert await client.read_closed()
        await client.close(bye=False)
    assert sim.stats()["sessions"] == 0
    fresh = await sim.session()  # the listener is untouched
    await fresh.ok("register dbevent ev")  # the old registration died with its session
    await fresh.close()


async def test_refuse_closes_the_listener_for_a_while(sim: SimServer) -> None:
    kept = await sim.session()
    sim.refuse(0.3)
    with pytest.raises(ConnectionRefusedError):
        await sim.session()
    await kept.ok("select 1")  # existing sessions keep working
    again = await _connect_when_back(sim)
    await again.close()
    await kept.close()


async def test_refuse_zero_ends_refusing(sim: SimServer) -> None:
    sim.refuse(3600)
    with pytest.raises(ConnectionRefusedError):
        await sim.session()
    sim.refuse(0)
    client = await _connect_when_back(sim)
    await client.close()


async def test_stop_just_after_refusing_ends_leaves_no_listener() -> None:
    """refuse(0) listens again in a task; a stop() before that task runs must win."""
    server = SimServer()
    await server.start()
    server.refuse(3600)
    server.refuse(0)
    await server.stop()
    assert not server.listening
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_restart_comes_back_on_the_same_port(sim: SimServer) -> None:
    port = sim.port
    client = await sim.session()
    await client.ok("register dbevent ev")
    restart = asyncio.create_task(sim.restart(0.3))
    assert await client.read_closed()
    await client.close(bye=False)
    with pytest.raises(ConnectionRefusedError):
        await sim.session()
    await restart
    assert sim.port == port
    fresh = await sim.session()
    assert sim.raise_event("ingres", "ev") == 0  # registrations did not survive
    await fresh.close()


async def test_delay_holds_events_and_keeps_their_order(sim: SimServer) -> None:
    listener = await sim.session()
    await listener.ok("register dbevent ev")
    sim.set_delay(300)
    sim.raise_event("ingres", "ev", b"held")
    sim.set_delay(0)
    sim.raise_event("ingres", "ev", b"after")  # queues behind the held one
    assert await listener.next_event(0.05) is None
    first = await listener.next_event()
    second = await listener.next_event()
    assert first is not None
    assert second is not None
    assert [first.text, second.text] == [b"held", b"after"]
    assert sim.stats()["events_pending"] == 0
    await listener.close()


async def test_full_queue_drops_events_for_that_session_only() -> None:
    async with SimServer(queue_limit=4096) as sim:
        sim.create_event("ingres", "ev")
        stuck = await sim.session()  # never reads while the events pile up
        await stuck.ok("register dbevent ev")
        text = b"x" * 256
        for _ in range(40_000):  # about 12 MB: more than the socket buffers hold
            sim.raise_event("ingres", "ev", text)
        # The event thread's turn.
        assert await eventually(lambda: sim.stats()["events_pending"] == 0, 10)
        stats = sim.stats()
        assert stats["events_dropped"] > 0
        assert stats["events_delivered"] + stats["events_dropped"] == 40_000
        received = 0
        while await stuck.next_event(0.5) is not None:
            received += 1
        assert received == stats["events_delivered"]
        await stuck.close()


async def test_oversized_frame_drops_the_connection(sim: SimServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(struct.pack(">IB", wire.MAX_FRAME + 1, wire.T_CONNECT))
    await writer.drain()
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


async def test_query_before_connect_drops_the_connection(sim: SimServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(wire.query_frame("select 1"))
    await writer.drain()
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


async def test_control_frames(sim: SimServer) -> None:
    client = await sim.session()
    await client.ok("register dbevent ev")
    stats = await control.send_async("127.0.0.1", sim.port, {"op": "stats"})
    assert stats["ok"] is True
    assert stats["sessions"] == 1
    assert {"events_raised", "events_delivered", "dbevents"} <= stats.keys()
    assert (await control.send_async("127.0.0.1", sim.port, {"op": "delay", "ms": 5}))["ok"]
    assert sim.stats()["delay_ms"] == 5
    reply = await control.send_async("127.0.0.1", sim.port, {"op": "drop_sessions"})
    assert reply == {"ok": True, "dropped": 1}
    assert await client.read_closed()
    await client.close(bye=False)
    bad = await control.send_async("127.0.0.1", sim.port, {"op": "explode"})
    assert bad["ok"] is False
    assert "explode" in bad["error"]


async def test_control_restart_and_refuse(sim: SimServer) -> None:
    port = sim.port
    reply = await control.send_async("127.0.0.1", port, {"op": "restart", "down_seconds": 0.2})
    assert reply["ok"] is True
    assert await eventually(lambda: sim.listening, 10)
    reply = await control.send_async("127.0.0.1", port, {"op": "refuse", "seconds": 0.2})
    assert reply["ok"] is True
    assert not sim.listening
    client = await _connect_when_back(sim)
    await client.close()


def test_server_thread_wrappers() -> None:
    with ServerThread() as st:
        assert st.target() == f"@127.0.0.1,tcp_ip,{st.port}[ingres,x]::demodb"
        assert st.target("bob", "pw", "db") == f"@127.0.0.1,tcp_ip,{st.port}[bob,pw]::db"
        st.create_event("ingres", "ev")
        st.grant("ingres", "ev", "public", ["register"])
        assert st.raise_event("ingres", "ev", b"t") == 0
        st.set_delay(1)
        st.refuse(0)
        assert st.drop_sessions() == 0
        st.restart(0.1)
        assert control.stats("127.0.0.1", st.port)["dbevents"] == [
            {"database": "demodb", "owner": "ingres", "name": "ev"}
        ]
        assert st.stats()["events_raised"] == 1


async def test_raising_to_a_vanished_session_is_harmless(sim: SimServer) -> None:
    gone = await sim.session()
    await gone.ok("register dbevent ev")
    await gone.close(bye=False)  # no BYE: the socket just closes
    for _ in range(20):
        sim.raise_event("ingres", "ev", b"into the void")
    assert await eventually(lambda: sim.stats()["sessions"] == 0, 10)
    assert sim.raise_event("ingres", "ev") == 0


def test_server_thread_start_failure_is_reported() -> None:
    with ServerThread() as first:
        taken = ServerThread(SimServer(port=first.port, host="127.0.0.1"))
        # SO_REUSEADDR does not allow two listeners on one port
        with pytest.raises(OSError, match="address already in use"):
            taken.start()
