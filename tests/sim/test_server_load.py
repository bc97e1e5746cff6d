"""Volume: many events back to back, many connect/disconnect cycles, no leak.

The short variants run always; the full sizes of the issue (100,000 events,
1,000 cycles) are `slow`. Nothing here asserts a duration.
"""

from __future__ import annotations

import asyncio

import pytest

from bridge.sim.server import SimServer
from tests.polling import eventually


async def _raise_many(count: int) -> None:
    async with SimServer() as sim:
        listener = await sim.session()
        raiser = await sim.session()
        await raiser.ok("create dbevent ev")
        await listener.ok("register dbevent ev")

        async def receive() -> list[bytes | None]:
            texts = []
            for _ in range(count):
                event = await listener.next_event(60)
                assert event is not None
                texts.append(event.text)
            return texts

        receiving = asyncio.create_task(receive())
        for i in range(count):
            await raiser.ok(f"raise dbevent ev '{i}'")
        texts = await receiving
        assert texts == [str(i).encode() for i in range(count)]
        stats = sim.stats()
        assert (stats["events_raised"], stats["events_delivered"]) == (count, count)
        assert stats["events_dropped"] == 0
        await listener.close()
        await raiser.close()


async def _cycle(count: int) -> None:
    async with SimServer() as sim:
        sim.create_event("ingres", "ev")
        for _ in range(count):
            client = await sim.session()
            await client.ok("register dbevent ev")
            await client.close()
        # Every closed connection reaped, then the figures.
        assert await eventually(lambda: sim.stats()["connections"] == 0, 10)
        stats = sim.stats()
        assert stats["connects"] == count
        assert (stats["sessions"], stats["connections"], stats["registrations"]) == (0, 0, 0)
        assert sim.raise_event("ingres", "ev") == 0


async def test_events_back_to_back() -> None:
    await _raise_many(2_000)


async def test_connect_disconnect_cycles() -> None:
    await _cycle(100)


@pytest.mark.slow
async def test_100k_events_back_to_back() -> None:
    await _raise_many(100_000)


@pytest.mark.slow
async def test_1000_connect_disconnect_cycles() -> None:
    await _cycle(1_000)
