"""End to end, in-process: pyngres raiser -> simulator -> bridge -> real RabbitMQ -> subscriber."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import pytest
from cloudevents.core.bindings import rabbitmq
from pydantic import AnyUrl
from yarl import URL

from bridge.app import Bridge
from bridge.publisher import PublisherStartupError
from bridge.settings import AmqpUrl, Settings
from bridge.sim.server import ServerThread
from bridge.spool import Spool
from tests.faults.proxy import TcpProxy
from tests.integration.conftest import (
    Raised,
    body_of,
    decoded_text,
    raise_all,
    receive,
    sample,
)
from tests.metric_value import metric_value
from tests.polling import eventually

pytestmark = pytest.mark.amqp

ROUTING_KEYS = {
    ("ingres", "order_created"): "ingres.order_created",
    ("alice", "audit_log"): "alice.audit_log",
    ("ingres", "price#changed"): "ingres.price%23changed",
    ("ingres", "rate.limit"): "ingres.rate%2Elimit",
}


async def _started(settings: Settings) -> Bridge:
    bridge = Bridge(settings)
    await bridge.start()
    registered = await asyncio.to_thread(bridge.wait_registered, 30.0)
    assert registered, "the bridge did not register its events"
    return bridge


def _check_message(
    message: aio_pika.abc.AbstractIncomingMessage, raised: Raised, started: datetime
) -> None:
    body = body_of(message)
    assert message.routing_key == ROUTING_KEYS[(raised.owner, raised.name)]
    assert (body["database"], body["owner"], body["name"]) == ("demodb", raised.owner, raised.name)
    assert decoded_text(body) == raised.text
    try:
        raised.text.decode("utf-8") if raised.text is not None else None
        assert "text_base64" not in body
    except UnicodeDecodeError:
        assert body["text"] is None
    raised_at = datetime.fromisoformat(body["raised_at"])
    assert started - timedelta(seconds=1) <= raised_at <= datetime.now(UTC)
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.app_id == "dbevent-bridge"
    assert message.type == f"{raised.owner}.{raised.name}"
    assert message.timestamp is not None
    assert message.headers == {
        "x-dbevent-database": "demodb",
        "x-dbevent-owner": raised.owner,
        "x-dbevent-name": raised.name,
    }


async def test_every_event_arrives_once_in_order_with_exact_content(
    settings: Settings, sim: ServerThread, subscriber: aio_pika.abc.AbstractQueue
) -> None:
    count = 10_000
    events = [sample(i) for i in range(count)]
    started = datetime.now(UTC).replace(microsecond=0)
    bridge = await _started(settings)
    try:
        await asyncio.to_thread(raise_all, sim.target(), events)
        messages = await receive(subscriber, count)
    finally:
        await bridge.shutdown()

    assert len(messages) == count, f"{count - len(messages)} events lost"
    ids = [m.message_id for m in messages]
    assert len(set(ids)) == count, "duplicate message_id"
    for message, raised in zip(messages, events, strict=True):
        _check_message(message, raised, started)
    assert metric_value(bridge.metrics, "events_caught") == count
    assert metric_value(bridge.metrics, "events_confirmed") == count


async def test_unroutable_events_are_counted_and_do_not_block(
    settings: Settings, sim: ServerThread, subscriber: aio_pika.abc.AbstractQueue
) -> None:
    # Only order_created is bound; the other names have no route at all.
    await subscriber.unbind(settings.amqp.exchange, routing_key="#")
    await subscriber.bind(settings.amqp.exchange, routing_key="ingres.order_created")
    events = [sample(i) for i in range(40)]
    bridge = await _started(settings)
    try:
        await asyncio.to_thread(raise_all, sim.target(), events)
        routed = [e for e in events if e.name == "order_created"]
        messages = await receive(subscriber, len(routed))
        assert await eventually(
            lambda: metric_value(bridge.metrics, "events_confirmed") == len(events), 30)
    finally:
        await bridge.shutdown()
    assert [decoded_text(body_of(m)) for m in messages] == [e.text for e in routed]
    assert metric_value(bridge.metrics, "events_returned") == len(events) - len(routed)


async def test_unknown_event_is_retried_and_readiness_names_it(
    settings: Settings, sim: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    """No crash loop: the bridge stays up, /readyz says what is missing, and it registers
    as soon as the event exists."""
    ingres = settings.ingres.model_copy(update={"events": ["order_created", "no_such_event"]})
    bridge = Bridge(settings.model_copy(update={"ingres": ingres}))
    await bridge.start()
    try:
        assert await eventually(lambda: "no_such_event" in _ingres_reason(bridge), 30)
        ready, _ = bridge.health.ready()
        assert not ready
        assert "SQLSTATE 42" in _ingres_reason(bridge)  # the Ingres error itself is shown
        warnings = [r for r in caplog.records
                    if r.levelname == "WARNING" and "no_such_event" in r.getMessage()]
        assert warnings, "no WARNING line gives the reason"
        stop = asyncio.Event()
        waiting = asyncio.create_task(bridge.wait(stop))
        await asyncio.to_thread(sim.create_event, "ingres", "no_such_event")
        assert await asyncio.to_thread(bridge.wait_registered, 30.0)
        assert await eventually(lambda: bridge.health.ready()[1]["components"]["ingres"]["ok"], 30)
        assert not waiting.done(), "the bridge gave up"
        stop.set()
        await waiting
    finally:
        await bridge.shutdown()


def _ingres_reason(bridge: Bridge) -> str:
    return str(bridge.health.ready()[1]["components"]["ingres"]["reason"])


async def test_catching_starts_while_the_broker_is_unreachable(
    settings: Settings, sim: ServerThread, subscriber: aio_pika.abc.AbstractQueue,
    amqp_url: str,
) -> None:
    """Events raised before RabbitMQ answers wait in the spool, then all arrive."""
    broker = URL(amqp_url)
    with TcpProxy(broker.host or "127.0.0.1", broker.port or 5672) as proxy:
        proxy.refusing = True
        amqp = settings.amqp.model_copy(update={
            "url": AmqpUrl(AnyUrl(str(broker.with_port(proxy.port)))),
            "reconnect_backoff_min": 0.05, "reconnect_backoff_max": 0.2,
        })
        bridge = Bridge(settings.model_copy(update={"amqp": amqp}))
        await bridge.start()
        try:
            assert await asyncio.to_thread(bridge.wait_registered, 30.0)
            assert not bridge.health.ready()[0]
            events = [sample(i) for i in range(50)]
            await asyncio.to_thread(raise_all, sim.target(), events)
            assert await eventually(
                lambda: metric_value(bridge.metrics, "spool_depth") == len(events), 30)
            proxy.refusing = False
            messages = await receive(subscriber, len(events))
            assert await eventually(lambda: bridge.health.ready()[0], 30)
        finally:
            await bridge.shutdown()
    assert [decoded_text(body_of(m)) for m in messages] == [e.text for e in events]


async def test_refused_credentials_stop_the_start(settings: Settings, amqp_url: str) -> None:
    url = URL(amqp_url).with_password("wrong-password")
    amqp = settings.amqp.model_copy(update={"url": AmqpUrl(AnyUrl(str(url)))})
    bridge = Bridge(settings.model_copy(update={"amqp": amqp}))
    try:
        with pytest.raises(PublisherStartupError) as refused:
            await bridge.start()
        assert not refused.value.transient
        assert "wrong-password" not in str(refused.value)
        # The failed start closed what it had opened: the spool is free (it is
        # locked while open), and there is nothing left to shut down.
        Spool.open(settings.spool.path).close()
    finally:
        await bridge.shutdown()


async def test_shutdown_runs_its_phases_in_order_each_logged_with_what_it_left(
    settings: Settings, sim: ServerThread, subscriber: aio_pika.abc.AbstractQueue,
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = [sample(i) for i in range(20)]
    bridge = await _started(settings)
    try:
        await asyncio.to_thread(raise_all, sim.target(), events)
        assert await eventually(
            lambda: metric_value(bridge.metrics, "events_caught") == len(events), 30)
    finally:
        with caplog.at_level(logging.INFO, logger="bridge.app"):
            await bridge.shutdown()
            await bridge.shutdown()  # idempotent: nothing runs twice
    assert len(await receive(subscriber, len(events))) == len(events)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("shutdown: ")]
    phases = [m.removeprefix("shutdown: ").partition(":")[0] for m in said
              if not m.startswith("shutdown: draining")]
    assert phases == ["stop intake", "close the Ingres sessions", "commit the backlog",
                      "drain into RabbitMQ", "close the publisher", "close the spool",
                      "close HTTP"]
    assert "close the Ingres sessions: all closed" in said[1]
    assert said[-3].endswith("close the publisher: closed")
    assert "close the spool: nothing left" in said[-2]
    left = Spool.open(settings.spool.path)  # closed (it is locked while open), and empty
    try:
        assert left.depth == 0
    finally:
        left.close()


async def test_two_bridges_publish_each_event_under_the_same_message_id(
    settings: Settings, sim: ServerThread, tmp_path: Path,
    subscriber: aio_pika.abc.AbstractQueue,
) -> None:
    """Stable ids: two bridges on one database (each with its own spool) agree on every id,
    identical events raised in one second included, so consumers can deduplicate."""
    second_spool = settings.spool.model_copy(update={"path": tmp_path / "second.db"})
    events = [Raised("ingres", "order_created", b"same text") for _ in range(5)]
    events += [sample(i) for i in range(20)]
    first = await _started(settings)
    try:
        second = await _started(settings.model_copy(update={"spool": second_spool}))
        try:
            await asyncio.to_thread(raise_all, sim.target(), events)
            routed = [e for e in events if (e.owner, e.name) in ROUTING_KEYS]
            messages = await receive(subscriber, 2 * len(routed))
        finally:
            await second.shutdown()
    finally:
        await first.shutdown()
    ids = [m.message_id for m in messages]
    assert len(ids) == 2 * len(routed)
    assert len(set(ids)) == len(routed), "each event twice, under one id"
    assert all(ids.count(i) == 2 for i in set(ids))


async def test_cloudevents_format_is_what_a_cloudevents_consumer_reads(
    settings: Settings, sim: ServerThread, subscriber: aio_pika.abc.AbstractQueue
) -> None:
    """BRIDGE_AMQP__FORMAT=cloudevents: every message parsed by the CloudEvents SDK."""
    settings = settings.model_copy(
        update={"amqp": settings.amqp.model_copy(update={"format": "cloudevents"})})
    events = [sample(i) for i in range(64)]  # every name and every kind of text
    started = datetime.now(UTC).replace(microsecond=0)
    bridge = await _started(settings)
    try:
        await asyncio.to_thread(raise_all, sim.target(), events)
        messages = await receive(subscriber, len(events))
    finally:
        await bridge.shutdown()
    assert len(messages) == len(events)
    source = f"ingres://127.0.0.1:{sim.port}/demodb"
    for message, raised in zip(messages, events, strict=True):
        assert message.content_type == "application/cloudevents+json"
        event = rabbitmq.from_rabbitmq_event(rabbitmq.RabbitMQMessage(
            headers={}, content_type=message.content_type, body=message.body))
        assert event.get_specversion() == "1.0"
        assert event.get_id() == message.message_id
        assert event.get_source() == source
        assert event.get_type() == f"{raised.owner}.{raised.name}"
        assert event.get_subject() == "demodb"
        assert message.routing_key == ROUTING_KEYS[(raised.owner, raised.name)]
        time = event.get_time()
        assert time is not None
        assert started - timedelta(seconds=1) <= time <= datetime.now(UTC)
        data = event.get_data()
        if raised.text is None:
            assert data is None
        elif isinstance(data, bytes):  # data_base64: the bytes did not decode
            assert data == raised.text
            with pytest.raises(UnicodeDecodeError):
                raised.text.decode("utf-8")
        else:
            assert data == raised.text.decode("utf-8")
