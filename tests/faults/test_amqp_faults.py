"""The broker side breaks while events flow: connections cut, the broker node restarted.

Ingres is untouched here, so no gap is allowed: every event raised must
arrive, duplicates only under the same message_id (counted and printed).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from yarl import URL

from bridge.sim.server import ServerThread
from tests.faults.conftest import (
    Raiser,
    Subscriber,
    bound_queue,
    every,
    fault_settings,
    seed,
    start_bridge,
    verdict,
)
from tests.faults.proxy import TcpProxy
from tests.metric_value import metric_value
from tests.polling import eventually
from tests.rabbitnode import RabbitNode

pytestmark = pytest.mark.amqp


def _host_port(url: str) -> tuple[str, int]:
    parsed = URL(url)
    return parsed.host or "127.0.0.1", parsed.port or 5672


async def _cut_connections(proxy: TcpProxy, rng: random.Random, low: float, high: float,
                           until: asyncio.Event) -> int:
    """Cut every proxied connection at random intervals until `until` is set."""
    cuts = 0
    for pause in every(low, high, rng):
        try:
            await asyncio.wait_for(until.wait(), pause)
            return cuts
        except TimeoutError:
            pass
        if await asyncio.to_thread(proxy.cut):
            cuts += 1
    raise AssertionError("unreachable: every() never ends")


@pytest.mark.parametrize(
    ("count", "pace"),
    [
        pytest.param(3_000, 0.001, id="3k"),
        pytest.param(20_000, 0.0002, id="20k", marks=pytest.mark.slow),
    ],
)
async def test_connections_cut_every_half_to_two_seconds_lose_nothing(
    count: int, pace: float, amqp_url: str, sim: ServerThread, unique_name: str,
    isolated_env: Path,
) -> None:
    rng = random.Random(run_seed := seed())
    host, port = _host_port(amqp_url)
    with TcpProxy(host, port) as proxy:
        proxied = amqp_url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
        settings = fault_settings(isolated_env, proxied, sim.target(), unique_name,
                                  amqp={"confirm_window": 256, "publish_timeout": 5})
        async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
            bridge = await start_bridge(settings)
            stop_cutting = asyncio.Event()
            cutter = asyncio.create_task(_cut_connections(proxy, rng, 0.5, 2.0, stop_cutting))
            try:
                raiser = Raiser(sim, count=count, pace=pace).start()
                await raiser.wait()
                await sub.until(lambda t: t.distinct >= count, within=120)
            finally:
                stop_cutting.set()
                cuts = await cutter
                await bridge.shutdown()
            await sub.drain()  # late duplicates, if any, are counted too
    result = verdict(
        "amqp cuts", raiser.records, sub.tally, seed=run_seed, cuts=cuts,
        caught=int(metric_value(bridge.metrics, "events_caught")),
        published=int(metric_value(bridge.metrics, "events_published")),
        confirmed=int(metric_value(bridge.metrics, "events_confirmed")),
        republished=int(metric_value(bridge.metrics, "events_republished")),
    )
    result.check()
    assert result.gaps == 0, "Ingres was never interrupted"
    assert result.unregistered == 0
    assert cuts >= 1, "the flow ended before the first cut: the test proved nothing"


@pytest.mark.parametrize(
    ("restarts", "pace"),
    [
        pytest.param(1, 0.001, id="1-restart"),
        pytest.param(3, 0.0005, id="3-restarts", marks=pytest.mark.slow),
    ],
)
async def test_broker_node_stopped_and_started_during_the_flow_loses_nothing(
    restarts: int, pace: float, rabbit_node: RabbitNode, sim: ServerThread,
    unique_name: str, isolated_env: Path,
) -> None:
    """Events flow (paced) from before the first stop until after the last start."""
    async with bound_queue(rabbit_node.url, unique_name, durable=True, keep=True):
        pass  # declared now; read, then deleted, at the end
    settings = fault_settings(isolated_env, rabbit_node.url, sim.target(), unique_name,
                              amqp={"publish_timeout": 10})
    bridge = await start_bridge(settings)
    downtimes: list[float] = []
    try:
        raiser = Raiser(sim, pace=pace).start()
        for _ in range(restarts):
            await asyncio.sleep(random.uniform(0.3, 1.0))
            began = time.monotonic()
            await asyncio.to_thread(rabbit_node.stop)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(rabbit_node.start)
            downtimes.append(round(time.monotonic() - began, 1))
        # Events raised after the last start flow too, before the raising stops.
        sent_before = raiser.sent
        assert await eventually(
            lambda: metric_value(bridge.metrics, "events_confirmed") > sent_before, within=60)
        await asyncio.to_thread(raiser.stop)
        count = raiser.sent
        assert await eventually(
            lambda: metric_value(bridge.metrics, "events_confirmed") >= count, within=120)
    finally:
        await bridge.shutdown()
    async with bound_queue(rabbit_node.url, unique_name, durable=True) as queue:
        sub = Subscriber(queue)
        async with sub:
            await sub.until(lambda t: t.distinct >= count, within=60)
            await sub.drain()
    result = verdict(
        "broker restarts", raiser.records, sub.tally, restarts=restarts,
        down_seconds=downtimes, caught=int(metric_value(bridge.metrics, "events_caught")),
        published=int(metric_value(bridge.metrics, "events_published")),
        confirmed=int(metric_value(bridge.metrics, "events_confirmed")),
        reconnects=int(metric_value(bridge.metrics, "reconnects", side="amqp")),
    )
    result.check()
    assert result.gaps == 0
    assert result.unregistered == 0
    # One reconnect may span two restarts when its back-off outlasts the node's uptime.
    assert result.extra["reconnects"] >= 1
