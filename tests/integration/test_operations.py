"""The operations endpoint of a running bridge: probes and metrics follow events and faults."""

from __future__ import annotations

import asyncio
import re

import aio_pika
import aiohttp
import pytest
from pydantic import AnyUrl
from yarl import URL

from bridge.app import Bridge
from bridge.settings import AmqpUrl, Settings
from bridge.sim.server import ServerThread
from tests.faults.proxy import TcpProxy
from tests.integration.conftest import raise_all, receive, sample
from tests.metric_value import metric_value
from tests.polling import eventually

pytestmark = pytest.mark.amqp


def _value(metrics: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", metrics, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_probes_and_metrics_follow_events_and_an_ingres_outage(
    settings: Settings, sim: ServerThread, subscriber: aio_pika.abc.AbstractQueue
) -> None:
    http = settings.http.model_copy(update={"listen": "127.0.0.1:0"})
    bridge = Bridge(settings.model_copy(update={"http": http}))
    await bridge.start()
    running = bridge._running
    assert running is not None
    assert running.http is not None
    base = f"http://127.0.0.1:{running.http.port}"
    try:
        async with aiohttp.ClientSession() as client:

            async def get(path: str) -> tuple[int, str]:
                async with client.get(base + path) as response:
                    return response.status, await response.text()

            assert await asyncio.to_thread(bridge.wait_registered, 30.0)
            assert (await get("/healthz"))[0] == 200
            assert (await get("/readyz"))[0] == 200
            await asyncio.to_thread(raise_all, sim.target(), [sample(i) for i in range(25)])
            assert len(await receive(subscriber, 25)) == 25
            assert await eventually(
                lambda: metric_value(bridge.metrics, "events_confirmed") == 25, 30)
            metrics = (await get("/metrics"))[1]
            assert _value(metrics, 'dbevent_bridge_events_caught_total{database="demodb"}') == 25
            assert _value(metrics, "dbevent_bridge_events_confirmed_total") == 25
            assert _value(metrics, 'dbevent_bridge_ready{database="demodb",side="ingres"}') == 1
            assert _value(
                metrics, 'dbevent_bridge_last_event_timestamp_seconds{database="demodb"}') > 0

            sim.refuse(1.0)
            sim.drop_sessions()
            assert await eventually(lambda: not bridge.health.ready()[0], 30)
            status, body = await get("/readyz")
            assert status == 503
            assert "ingres" in body
            assert "password" not in body
            assert await eventually(lambda: bridge.health.ready()[0], 30)
            assert await eventually(lambda: metric_value(bridge.metrics, "gap_markers") == 1, 30)
            metrics = (await get("/metrics"))[1]
            assert _value(metrics, 'dbevent_bridge_reconnects_total{side="ingres"}') == 1
            assert _value(metrics, 'dbevent_bridge_gap_markers_total{database="demodb"}') == 1
            gap = await receive(subscriber, 1)
            assert gap[0].type == "dbevent-bridge.gap"
    finally:
        await bridge.shutdown()


async def test_backlog_gauges_and_latency_follow_a_stalled_broker(
    settings: Settings, sim: ServerThread, subscriber: aio_pika.abc.AbstractQueue,
    amqp_url: str,
) -> None:
    """Events wait in the spool while the broker path is stalled, and leave it after."""
    broker = URL(amqp_url)
    with TcpProxy(broker.host or "127.0.0.1", broker.port or 5672) as proxy:
        amqp = settings.amqp.model_copy(
            update={"url": AmqpUrl(AnyUrl(str(broker.with_port(proxy.port))))}
        )
        bridge = Bridge(settings.model_copy(update={"amqp": amqp}))
        await bridge.start()
        try:
            assert await asyncio.to_thread(bridge.wait_registered, 30.0)
            proxy.pause()
            await asyncio.to_thread(raise_all, sim.target(), [sample(i) for i in range(30)])
            # Caught events are counted on hand-over, spooled in the next batch.
            assert await eventually(lambda: metric_value(bridge.metrics, "spool_depth") == 30, 30)
            assert metric_value(bridge.metrics, "events_caught") == 30
            assert metric_value(bridge.metrics, "spool_bytes") > 0
            assert metric_value(bridge.metrics, "events_confirmed") == 0
            proxy.resume()
            assert len(await receive(subscriber, 30)) == 30
            assert await eventually(lambda: metric_value(bridge.metrics, "spool_depth") == 0, 30)
            assert metric_value(bridge.metrics, "spool_bytes") == 0
            assert metric_value(bridge.metrics, "queue_depth") == 0
            assert metric_value(bridge.metrics, "events_published") >= 30
            latencies = bridge.metrics.registry.get_sample_value(
                "dbevent_bridge_raise_to_confirm_seconds_count"
            )
            assert latencies == 30
        finally:
            await bridge.shutdown()
