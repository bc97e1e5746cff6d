"""The operations endpoint: probes answer as Kubernetes expects, metrics move, no secrets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bridge.health import Health
from bridge.http import HttpServer, start_http
from bridge.metrics import Metrics

SECRET = "hunter2-secret"


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture
async def server(metrics: Metrics, health: Health) -> AsyncIterator[HttpServer]:
    srv = await start_http(("127.0.0.1", 0), metrics, health)
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def client(server: HttpServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        yield session


async def _get(client: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    async with client.get(path) as response:
        return response.status, await response.text()


async def _get_json(client: aiohttp.ClientSession, path: str) -> tuple[int, dict[str, object]]:
    async with client.get(path) as response:
        assert response.content_type == "application/json"
        body: dict[str, object] = await response.json()
        return response.status, body


async def _forever() -> None:
    await asyncio.Event().wait()


async def _crash() -> None:
    raise RuntimeError(f"amqp://bridge:{SECRET}@rabbit/ unreachable")


async def test_port_zero_binds_a_free_port(server: HttpServer) -> None:
    assert server.port > 0
    assert server.host == "127.0.0.1"


async def test_healthz_alive_while_tasks_run(
    client: aiohttp.ClientSession, health: Health
) -> None:
    task = asyncio.create_task(_forever(), name="catcher")
    health.watch_tasks([task])
    try:
        status, body = await _get_json(client, "/healthz")
        assert status == 200
        assert body == {"status": "alive", "tasks": {"catcher": "running"}}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    status, body = await _get_json(client, "/healthz")
    assert status == 503
    assert body == {"status": "dead", "tasks": {"catcher": "cancelled"}}


async def test_healthz_503_names_the_failed_task_not_its_message(
    client: aiohttp.ClientSession, health: Health
) -> None:
    running = asyncio.create_task(_forever(), name="publisher")
    crashed = asyncio.create_task(_crash(), name="catcher")
    await asyncio.gather(crashed, return_exceptions=True)
    health.watch_tasks([running, crashed])
    try:
        status, text = await _get(client, "/healthz")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert status == 503
    assert '"catcher": "failed: RuntimeError"' in text
    assert '"publisher": "running"' in text
    assert SECRET not in text


async def test_readyz_not_ready_until_every_component_reports(
    client: aiohttp.ClientSession, health: Health
) -> None:
    status, body = await _get_json(client, "/readyz")
    assert status == 503
    assert body["status"] == "not ready"
    health.set("ingres", True)
    status, body = await _get_json(client, "/readyz")
    assert status == 503
    components = body["components"]
    assert isinstance(components, dict)
    assert components["ingres"]["ok"] is True
    assert components["amqp"] == {
        "ok": False, "reason": "not reported yet", "since": components["amqp"]["since"]
    }
    health.set("amqp", True)
    status, body = await _get_json(client, "/readyz")
    assert status == 200
    assert body["status"] == "ready"


async def test_readyz_503_with_reason_and_no_secret(
    client: aiohttp.ClientSession, health: Health
) -> None:
    health.set("ingres", True)
    health.set("amqp", False, f"connection refused by amqps://bridge:{SECRET}@rabbit:5671/")
    status, text = await _get(client, "/readyz")
    assert status == 503
    assert "connection refused by amqps://bridge:***@rabbit:5671/" in text
    assert SECRET not in text


async def test_metrics_exposition_moves_with_counters(
    client: aiohttp.ClientSession, metrics: Metrics
) -> None:
    async with client.get("/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        before = await response.text()
    assert "dbevent_bridge_events_caught_total{" not in before  # no database seen yet
    metrics.events_caught.labels(database="sales").inc(3)
    metrics.events_dropped.labels(reason="bad_routing_key").inc()
    metrics.spool_depth.set(7)
    metrics.raise_to_confirm.observe(0.02)
    status, after = await _get(client, "/metrics")
    assert status == 200
    assert 'dbevent_bridge_events_caught_total{database="sales"} 3.0' in after
    assert 'dbevent_bridge_events_dropped_total{reason="bad_routing_key"} 1.0' in after
    assert "dbevent_bridge_spool_depth 7.0" in after
    assert 'dbevent_bridge_raise_to_confirm_seconds_bucket{le="0.025"} 1.0' in after


async def test_unknown_path_is_404(client: aiohttp.ClientSession) -> None:
    status, _ = await _get(client, "/admin")
    assert status == 404


async def test_nothing_secret_in_any_response(
    client: aiohttp.ClientSession, health: Health, metrics: Metrics
) -> None:
    health.set("amqp", False, f"login refused for amqp://bridge:{SECRET}@rabbit/")
    crashed = asyncio.create_task(_crash(), name="publisher")
    await asyncio.gather(crashed, return_exceptions=True)
    health.watch_tasks([crashed])
    metrics.events_caught.labels(database="sales").inc()
    for path in ("/healthz", "/readyz", "/metrics"):
        status, text = await _get(client, path)
        assert status in (200, 503), path
        assert SECRET not in text, path


async def test_close_releases_the_port(metrics: Metrics, health: Health) -> None:
    srv = await start_http(("127.0.0.1", 0), metrics, health)
    port = srv.port
    await srv.close()
    again = await start_http(("127.0.0.1", port), metrics, health)
    try:
        assert again.port == port
    finally:
        await again.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_ipv6_loopback(metrics: Metrics, health: Health) -> None:
    try:
        srv = await start_http(("::1", 0), metrics, health)
    except OSError as exc:  # a host without IPv6 is not the endpoint's fault
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://[::1]:{srv.port}/healthz") as response,
        ):
            assert response.status == 200
    finally:
        await srv.close()
