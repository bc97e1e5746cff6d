"""Active/standby pairs, in-process: one bridge publishes, the other holds and takes over."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import pytest

from bridge.app import Bridge
from bridge.settings import Settings
from bridge.sim.server import ServerThread
from tests.integration.conftest import Raised, raise_all, receive
from tests.metric_value import metric_value
from tests.polling import eventually

pytestmark = pytest.mark.amqp


def _pair_settings(settings: Settings, tmp_path: Path, name: str) -> Settings:
    spool = settings.spool.model_copy(update={"path": tmp_path / f"{name}.db"})
    # The exchange's name is unique per test: so is the group (the broker is shared).
    ha = settings.ha.model_copy(update={"mode": "active-standby",
                                        "group": settings.amqp.exchange})
    return settings.model_copy(update={"spool": spool, "ha": ha})


async def _started(settings: Settings) -> Bridge:
    bridge = Bridge(settings)
    await bridge.start()
    assert await asyncio.to_thread(bridge.wait_registered, 30.0)
    return bridge


def _role(bridge: Bridge) -> object:
    return bridge.health.ready()[1].get("role")


def _standing_by(bridge: Bridge) -> bool:
    """Ready (registered, following the reports, queued for the lease) and not active."""
    ready, body = bridge.health.ready()
    return ready and body.get("role") == "standby"


async def test_one_publishes_the_other_stands_by_then_takes_over(
    settings: Settings, sim: ServerThread, tmp_path: Path,
    subscriber: aio_pika.abc.AbstractQueue,
) -> None:
    first = await _started(_pair_settings(settings, tmp_path, "first"))
    second: Bridge | None = None
    try:
        assert await eventually(lambda: _role(first) == "active", 30)
        second = await _started(_pair_settings(settings, tmp_path, "second"))
        # The role reads "standby" from the start; ready says it also follows the reports.
        assert await eventually(lambda: _standing_by(second), 30)
        assert metric_value(second.metrics, "ha_active") == 0
        assert metric_value(first.metrics, "ha_active") == 1
        before = [Raised("ingres", "order_created", f"before #{i}".encode()) for i in range(30)]
        await asyncio.to_thread(raise_all, sim.target(), before)
        got = await receive(subscriber, len(before))
        assert len(got) == len(before)
        # The standby forgets what the active reports as published.
        assert await eventually(lambda: metric_value(second.metrics, "ha_held") == 0, 30)
        assert await eventually(lambda: metric_value(second.metrics, "spool_depth") == 0, 30)
        assert metric_value(second.metrics, "events_published") == 0
        await first.shutdown()
        assert await eventually(lambda: _role(second) == "active", 10)
        after = [Raised("ingres", "order_created", f"after #{i}".encode()) for i in range(30)]
        await asyncio.to_thread(raise_all, sim.target(), after)
        rest = await receive(subscriber, len(after), within=30)
    finally:
        await first.shutdown()
        if second is not None:
            await second.shutdown()
    texts = [m.body for m in got + rest]
    assert len(rest) == len(after), texts
    assert all(b"after" in m.body for m in rest)
