"""The spool fills up while the broker is away: the configured policy applies, memory stays bounded.

Accounting: every raised event is either delivered once the broker is back,
or counted in `events_dropped{reason="spool_full"}` (drop policies), so
lost = sent - delivered - dropped must be 0; under `block` nothing is
dropped (the simulator holds the events while the catcher pauses).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from yarl import URL

from bridge.app import Bridge
from bridge.sim.server import ServerThread
from tests.faults.conftest import (
    Raiser,
    Subscriber,
    bound_queue,
    fault_settings,
    start_bridge,
)
from tests.faults.process import BridgeProcess, bridge_env
from tests.faults.proxy import TcpProxy
from tests.metric_value import metric_value
from tests.polling import eventually

pytestmark = pytest.mark.amqp

POLICIES = ("drop_newest", "drop_oldest", "block")
MAX_EVENTS = 100  # in memory
FLUSH_MAX = 256  # the backlog's pending batch, committed once per loop iteration
# Once the broker is back, delivery may pause for the publisher's reconnect
# back-off (amqp.reconnect_backoff_max, 10 s) plus a publish timeout (2 s
# here); longer than that with nothing arriving, delivery has stalled. How long
# the whole pile takes is the machine's business (the test's timeout bounds it).
DELIVERY_STALL_S = 30.0


def _proxied(amqp_url: str, proxy: TcpProxy) -> str:
    url = URL(amqp_url)
    return str(url.with_host("127.0.0.1").with_port(proxy.port))


def _dropped(bridge: Bridge) -> int:
    return int(metric_value(bridge.metrics, "events_dropped", reason="spool_full"))


async def _peak_memory_depth(bridge: Bridge, stop: asyncio.Event) -> int:
    """The most events the backlog held in memory (its queue_depth gauge) until `stop`."""
    peak = 0
    while not stop.is_set():
        peak = max(peak, int(metric_value(bridge.metrics, "queue_depth")))
        await asyncio.sleep(0.005)
    return peak


@pytest.mark.parametrize("policy", POLICIES)
async def test_spool_full_with_the_broker_away_applies_the_policy(
    policy: str, amqp_url: str, sim: ServerThread, unique_name: str, isolated_env: Path
) -> None:
    count = 2_000
    host = URL(amqp_url)
    with TcpProxy(host.host or "127.0.0.1", host.port or 5672) as proxy:
        settings = fault_settings(
            isolated_env, _proxied(amqp_url, proxy), sim.target(), unique_name,
            spool={"max_bytes": 30_000, "full_policy": policy},
            queue={"max_events": MAX_EVENTS}, amqp={"publish_timeout": 2},
        )
        async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
            bridge = await start_bridge(settings)
            stop = asyncio.Event()
            sampler = asyncio.create_task(_peak_memory_depth(bridge, stop))
            try:
                proxy.refusing = True
                proxy.cut()  # the broker is away
                raiser = Raiser(sim, count=count).start()
                await raiser.wait()
                assert bridge._running is not None
                backlog = bridge._running.backlog
                if policy == "block":
                    # The full backlog holds the catcher thread back.
                    assert await eventually(lambda: not backlog.has_room, within=30)
                else:
                    assert await eventually(
                        lambda: metric_value(bridge.metrics, "events_caught") >= count, within=30)
                # Not a wait for something: the window in which a paused intake
                # (block) must stay paused, and a drop policy must catch no more.
                await asyncio.sleep(0.5)
                caught_while_away = int(metric_value(bridge.metrics, "events_caught"))
                dropped = _dropped(bridge)
                proxy.refusing = False  # the broker is back
                delivered = await sub.until_progressing(
                    lambda t: t.distinct + _dropped(bridge) >= count, DELIVERY_STALL_S)
            finally:
                stop.set()
                peak = await sampler
                await bridge.shutdown()
    received = sorted(sub.tally.message_ids)
    lost = count - len(received) - dropped
    assert delivered, (f"delivery stalled: nothing arrived for {DELIVERY_STALL_S:.0f} s "
                       f"with {len(received)} of {count - dropped} delivered")
    print(f"[spool full, {policy}] sent={count} caught while away={caught_while_away} "
          f"dropped={dropped} delivered={len(received)} duplicates={sub.tally.duplicates} "
          f"lost={lost} peak events in memory={peak}")
    assert lost == 0
    assert peak <= MAX_EVENTS + FLUSH_MAX, "memory is bounded by queue.max_events"
    if policy == "block":
        assert dropped == 0
        assert caught_while_away < count, "intake paused"
    else:
        assert dropped > 0
    if policy == "drop_newest":
        assert received == list(range(len(received))), "the newest were dropped"
    if policy == "drop_oldest":
        assert received[-1] == count - 1, "the newest were kept"


def _dropped_in(metrics: dict[str, float]) -> int:
    return int(metrics.get('dbevent_bridge_events_dropped_total{reason="spool_full"}', 0))


async def _caught_while_away(bridge: BridgeProcess, policy: str, count: int) -> int:
    """Wait until the bridge caught all (drop policies) or stopped catching (block)."""
    caught, steady_since = -1.0, time.monotonic()

    async def done() -> bool:
        nonlocal caught, steady_since
        now = await asyncio.to_thread(bridge.counter, "events_caught")
        if now != caught:
            caught, steady_since = now, time.monotonic()
        # block: intake counts as paused once the figure stood still for 3 s.
        return caught >= count or (policy == "block" and time.monotonic() - steady_since > 3)

    assert await eventually(done, within=600, every=0.2), (
        f"the bridge caught only {caught:.0f} of {count} events")
    return int(caught)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("policy", POLICIES)
async def test_spool_full_200k_events_bounded_rss(
    policy: str, amqp_url: str, sim: ServerThread, unique_name: str, tmp_path: Path
) -> None:
    count = 200_000
    host = URL(amqp_url)
    with TcpProxy(host.host or "127.0.0.1", host.port or 5672) as proxy:
        env = bridge_env(
            tmp_path, target=sim.target(), amqp_url=_proxied(amqp_url, proxy),
            exchange=unique_name, spool=tmp_path / "spool.db",
            extra={"BRIDGE_SPOOL__MAX_BYTES": "2MiB", "BRIDGE_SPOOL__FULL_POLICY": policy,
                   "BRIDGE_AMQP__PUBLISH_TIMEOUT": "2"},
        )
        bridge = BridgeProcess(env, tmp_path, tmp_path / "bridge.log")
        async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
            try:
                bridge.start()
                await asyncio.to_thread(bridge.wait_ready)
                baseline_kib = bridge.sample_rss()
                proxy.refusing = True
                proxy.cut()
                raiser = Raiser(sim, count=count).start()
                caught_while_away = await _caught_while_away(bridge, policy, count)
                await raiser.wait()
                dropped = _dropped_in(await asyncio.to_thread(bridge.metrics))
                proxy.refusing = False
                back = time.monotonic()
                delivered = await sub.until_progressing(
                    lambda t: t.distinct + dropped >= count, DELIVERY_STALL_S)
                delivery_s = time.monotonic() - back
                status = await asyncio.to_thread(bridge.terminate)
            finally:
                bridge.close()
    lost = count - sub.tally.distinct - dropped
    print(f"[spool full 200k, {policy}] sent={count} caught while away={caught_while_away} "
          f"dropped={dropped} delivered={sub.tally.distinct} duplicates={sub.tally.duplicates} "
          f"lost={lost} rss baseline={baseline_kib // 1024} MiB "
          f"peak={bridge.peak_rss_kib // 1024} MiB delivered in {delivery_s:.0f} s")
    assert delivered, (f"delivery stalled: nothing arrived for {DELIVERY_STALL_S:.0f} s with "
                       f"{sub.tally.distinct} of {count - dropped} delivered\n{bridge.tail()}")
    assert status == 0, bridge.tail()
    assert lost == 0
    assert bridge.peak_rss_kib < 400 * 1024, "memory is bounded"
