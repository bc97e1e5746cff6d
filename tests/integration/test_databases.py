"""Several databases in one process: one catcher per database, one publisher, nothing shared that
lets one database stop or delay another."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from bridge.app import Bridge
from bridge.openapi import Session
from bridge.settings import Settings, load_settings
from bridge.sim.server import ServerThread
from tests.integration.conftest import Raised, body_of, raise_all, receive
from tests.metric_value import metric_value
from tests.polling import eventually

pytestmark = pytest.mark.amqp


@pytest.fixture
def sales() -> Iterator[ServerThread]:
    with ServerThread() as server:
        server.create_event("ingres", "order_created", database="sales")
        yield server


@pytest.fixture
def stock() -> Iterator[ServerThread]:
    with ServerThread() as server:
        server.create_event("ingres", "order_created", database="stock")
        yield server


def _settings(
    amqp_url: str, exchange: str, tmp_path: Path, targets: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "no-secrets"))
    monkeypatch.setenv("BRIDGE_INGRES__TARGETS", json.dumps(targets))
    return load_settings({
        "ingres": {"events": ["order_created"], "reconnect_backoff_min": 0.05,
                   "reconnect_backoff_max": 0.5, "get_event_timeout": 0.2},
        "amqp": {"url": amqp_url, "exchange": exchange,
                 "routing_key": "{database}.{owner}.{name}"},
        "spool": {"path": str(tmp_path / "spool.db")},
        "http": {"listen": "off"},
        "shutdown": {"drain_timeout": 10},
    })


def _raise_once(target: str, statement: str) -> None:
    session = Session(target)
    session.open()
    try:
        session.execute(statement)
    finally:
        session.close()


def _events(prefix: str, count: int) -> list[Raised]:
    return [Raised("ingres", "order_created", f"{prefix} #{i}".encode()) for i in range(count)]


async def test_each_database_is_caught_labelled_and_routed_apart(
    amqp_url: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    sales: ServerThread, stock: ServerThread, subscriber: aio_pika.abc.AbstractQueue,
) -> None:
    settings = _settings(amqp_url, unique_name, tmp_path,
                         [sales.target(database="sales"), stock.target(database="stock")],
                         monkeypatch)
    bridge = Bridge(settings)
    await bridge.start()
    try:
        assert await asyncio.to_thread(bridge.wait_registered, 30.0)
        assert bridge.health.ready()[0]
        assert set(bridge.health.ready()[1]["components"]) == {
            "ingres:sales", "ingres:stock", "amqp"}
        await asyncio.gather(
            asyncio.to_thread(raise_all, sales.target(database="sales"), _events("sale", 30)),
            asyncio.to_thread(raise_all, stock.target(database="stock"), _events("stock", 20)),
        )
        messages = await receive(subscriber, 50)
    finally:
        await bridge.shutdown()
    assert len(messages) == 50
    by_key: dict[str, list[str]] = {}
    for message in messages:
        body = body_of(message)
        assert message.routing_key is not None
        by_key.setdefault(message.routing_key, []).append(body["text"])
        assert message.routing_key.startswith(body["database"] + ".")
    # Each database's events in its own raise order.
    assert by_key == {
        "sales.ingres.order_created": [f"sale #{i}" for i in range(30)],
        "stock.ingres.order_created": [f"stock #{i}" for i in range(20)],
    }
    assert metric_value(bridge.metrics, "events_caught", database="sales") == 30
    assert metric_value(bridge.metrics, "events_caught", database="stock") == 20
    assert len({m.message_id for m in messages}) == 50


async def test_a_database_that_fails_neither_stops_nor_delays_the_others(
    amqp_url: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    sales: ServerThread, stock: ServerThread, subscriber: aio_pika.abc.AbstractQueue,
) -> None:
    """stock's server drops every session, then refuses connections, while sales goes on."""
    settings = _settings(amqp_url, unique_name, tmp_path,
                         [sales.target(database="sales"), stock.target(database="stock")],
                         monkeypatch)
    bridge = Bridge(settings)
    await bridge.start()
    try:
        assert await asyncio.to_thread(bridge.wait_registered, 30.0)
        stock.refuse(60.0)
        stock.drop_sessions()
        assert await eventually(
            lambda: not bridge.health.ready()[1]["components"]["ingres:stock"]["ok"], 30)
        assert metric_value(bridge.metrics, "ready", side="ingres", database="stock") == 0
        # While stock is away, sales is caught and published as before.
        assert bridge.health.ready()[1]["components"]["ingres:sales"]["ok"]
        await asyncio.to_thread(raise_all, sales.target(database="sales"), _events("sale", 20))
        messages = await receive(subscriber, 20, within=15)
        assert [body_of(m)["text"] for m in messages] == [f"sale #{i}" for i in range(20)]
        stock.refuse(0.0)
        assert await eventually(
            lambda: bridge.health.ready()[1]["components"]["ingres:stock"]["ok"], 30)
        gaps = await receive(subscriber, 1, within=30)  # bound with '#': gaps come too
    finally:
        await bridge.shutdown()
    # Only stock lost a window, and its gap marker says so.
    assert [(m.type, body_of(m)["database"]) for m in gaps] == [("dbevent-bridge.gap", "stock")]
    # Counted once confirmed, which may follow the delivery by a moment.
    assert await eventually(
        lambda: metric_value(bridge.metrics, "gap_markers", database="stock") == 1, 10)
    assert metric_value(bridge.metrics, "gap_markers", database="sales") == 0


async def test_a_database_whose_catcher_gives_up_leaves_the_others_running(
    amqp_url: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    sales: ServerThread, subscriber: aio_pika.abc.AbstractQueue,
) -> None:
    """Refused credentials stop a one-database bridge; with several, only that database."""
    with ServerThread() as locked:
        locked.server.users = {"ingres": "right"}
        settings = _settings(amqp_url, unique_name, tmp_path,
                             [sales.target(database="sales"),
                              locked.target(password="wrong", database="stock")],
                             monkeypatch)
        bridge = Bridge(settings)
        stop = asyncio.Event()
        await bridge.start()
        waiting = asyncio.create_task(bridge.wait(stop))
        try:
            assert await eventually(
                lambda: "gave up" in bridge.health.ready()[1]["components"]["ingres:stock"]
                ["reason"], 60)
            await asyncio.to_thread(raise_all, sales.target(database="sales"), _events("s", 5))
            messages = await receive(subscriber, 5, within=15)
            assert not waiting.done()  # still running
        finally:
            stop.set()
            await waiting
            await bridge.shutdown()
    assert len(messages) == 5


async def test_a_database_section_gives_its_own_events(
    amqp_url: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    sales: ServerThread, subscriber: aio_pika.abc.AbstractQueue,
) -> None:
    """stock has only low_stock: registering the section's order_created there would fail."""
    with ServerThread() as stock:
        stock.create_event("ingres", "low_stock", database="stock")
        monkeypatch.setenv("BRIDGE_INGRES__DATABASES__STOCK__EVENTS", "low_stock")
        settings = _settings(amqp_url, unique_name, tmp_path,
                             [sales.target(database="sales"), stock.target(database="stock")],
                             monkeypatch)
        bridge = Bridge(settings)
        await bridge.start()
        try:
            assert await asyncio.to_thread(bridge.wait_registered, 30.0)
            assert await eventually(lambda: bridge.health.ready()[0], 30)
            await asyncio.to_thread(_raise_once, stock.target(database="stock"),
                                    "raise dbevent low_stock 'sku 7'")
            messages = await receive(subscriber, 1, within=15)
        finally:
            await bridge.shutdown()
    assert [m.routing_key for m in messages] == ["stock.ingres.low_stock"]
