"""The publisher against the real broker: delivery, order, returns, nacks, lost connections."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import aio_pika
import aio_pika.abc
import pytest
from yarl import URL

import bridge.publisher as publisher_module
from bridge.event import CaughtEvent, GapMarker, Item
from bridge.message import event_body, gap_body
from bridge.metrics import Metrics
from bridge.publisher import Publisher, PublisherStartupError
from bridge.settings import AmqpSettings
from tests.faults.proxy import TcpProxy
from tests.polling import eventually
from tests.queue_source import QueueSource
from tests.rabbitnode import RabbitNode, require_rabbitmq_server

T0 = datetime(2026, 11, 25, 8, 22, 23, 123456, tzinfo=UTC)


# Every test that talks to a broker carries the `amqp` marker; the configuration
# checks at the end do not need one.


# -- helpers -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def quick_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The publisher's fixed waits, shortened: tests see many outages and refusals."""
    for name, seconds in [("RECONNECT_JITTER", 0.05), ("RETRY_WAIT_INITIAL", 0.05),
                          ("RETRY_WAIT_MAX", 0.4), ("CONNECT_TIMEOUT", 5.0)]:
        monkeypatch.setattr(publisher_module, name, seconds)


def _config(url: str, exchange: str, **overrides: Any) -> AmqpSettings:
    quick: dict[str, Any] = {
        "reconnect_backoff_min": 0.05, "reconnect_backoff_max": 0.5, "publish_timeout": 10.0,
    }
    return AmqpSettings.model_validate({"url": url, "exchange": exchange, **quick, **overrides})


def _events(count: int, database: str = "salesdb") -> list[CaughtEvent]:
    return [
        CaughtEvent(database, "ingres", f"ev{i % 7}", T0 + timedelta(microseconds=i),
                    f"text {i}".encode())
        for i in range(count)
    ]


class RecordingSource(QueueSource):
    """A QueueSource that remembers what was confirmed, and can act on a count."""

    def __init__(self, items: Sequence[Item], close: bool = True) -> None:
        super().__init__()
        for item in items:
            self.put_nowait(item)
        if close:
            self.close()
        self.confirmed_events: list[CaughtEvent] = []
        self.confirmed_items: list[Item] = []
        self.on_confirm: Callable[[int], None] = lambda count: None

    def confirmed(self, item: Item) -> None:
        super().confirmed(item)
        self.confirmed_items.append(item)
        if isinstance(item, CaughtEvent):
            self.confirmed_events.append(item)
            self.on_confirm(len(self.confirmed_events))


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"dbevent_bridge_{name}_total", labels or None)
    return value or 0.0


@pytest.fixture
async def exchange(
    unique_name: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> AsyncIterator[str]:
    """A fresh exchange name, deleted after the test (the publisher declares it)."""
    yield unique_name
    channel = await amqp_connection.channel()
    await channel.exchange_delete(unique_name)
    await channel.close()


class Collector:
    """A queue bound to the exchange, collecting every message it receives."""

    def __init__(self) -> None:
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []
        self._unique: set[str | None] = set()
        self._arrived = asyncio.Event()

    async def bind(
        self, connection: aio_pika.abc.AbstractConnection, exchange: str,
        arguments: dict[str, Any] | None = None, consume: bool = True,
    ) -> aio_pika.abc.AbstractQueue:
        channel = await connection.channel()
        await channel.declare_exchange(exchange, "topic", durable=True)
        queue = await channel.declare_queue(exclusive=True, arguments=arguments)
        await queue.bind(exchange, "#")
        if consume:
            await self.consume(queue)
        return queue

    async def consume(self, queue: aio_pika.abc.AbstractQueue) -> None:
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.messages.append(message)
        self._unique.add(message.message_id)
        self._arrived.set()

    async def wait_for(self, count: int) -> None:
        """Wait until `count` DIFFERENT messages (by message_id) have arrived."""
        async with asyncio.timeout(30):
            while len(self._unique) < count:
                self._arrived.clear()
                await self._arrived.wait()

    def ids(self) -> list[str | None]:
        return [m.message_id for m in self.messages]


def _assert_is_event(message: aio_pika.abc.AbstractIncomingMessage, event: CaughtEvent,
                     exchange: str) -> None:
    assert message.body == event_body(event)
    assert message.exchange == exchange
    assert message.routing_key == f"{event.owner}.{event.name}"
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == event.message_id
    assert message.timestamp == event.raised_at.replace(microsecond=0)
    assert message.app_id == "dbevent-bridge"
    assert message.type == f"{event.owner}.{event.name}"
    assert message.headers == {
        "x-dbevent-database": event.database,
        "x-dbevent-owner": event.owner,
        "x-dbevent-name": event.name,
    }


@contextlib.asynccontextmanager
async def _publisher(config: AmqpSettings, metrics: Metrics) -> AsyncIterator[Publisher]:
    publisher = Publisher(config, metrics)
    try:
        yield publisher
    finally:
        await publisher.close()


# -- delivery ----------------------------------------------------------------------------


@pytest.mark.amqp
async def test_ten_thousand_events_arrive_once_in_order_exactly(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    collector = Collector()
    await collector.bind(amqp_connection, exchange)
    events = _events(10_000)
    source = RecordingSource(events)
    metrics = Metrics()
    async with _publisher(_config(amqp_url, exchange), metrics) as publisher:
        await publisher.start()
        assert publisher.is_connected
        await publisher.run(source)
        await collector.wait_for(len(events))
    assert not publisher.is_connected
    assert collector.ids() == [e.message_id for e in events]
    for message, event in zip(collector.messages, events, strict=True):
        _assert_is_event(message, event, exchange)
    assert source.confirmed_events == events
    assert _sample(metrics, "events_published") == 10_000
    assert _sample(metrics, "events_confirmed") == 10_000
    assert _sample(metrics, "events_republished") == 0
    assert metrics.registry.get_sample_value(
        "dbevent_bridge_raise_to_confirm_seconds_count") == 10_000


@pytest.mark.amqp
async def test_unroutable_events_are_counted_as_returned_and_do_not_block(
    amqp_url: str, exchange: str
) -> None:
    events = _events(50)
    source = RecordingSource(events)
    metrics = Metrics()
    async with _publisher(_config(amqp_url, exchange), metrics) as publisher:
        await publisher.run(source)  # no queue is bound: every message comes back
    assert source.confirmed_events == events
    assert _sample(metrics, "events_returned") == 50
    assert _sample(metrics, "events_confirmed") == 50


@pytest.mark.amqp
async def test_too_long_routing_key_drops_that_event_only(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    collector = Collector()
    await collector.bind(amqp_connection, exchange)
    events = _events(3)
    long_one = CaughtEvent("salesdb", "ingres", "n" * 300, T0, None)
    events.insert(1, long_one)
    source = RecordingSource(events)
    metrics = Metrics()
    async with _publisher(_config(amqp_url, exchange), metrics) as publisher:
        await publisher.run(source)
        await collector.wait_for(3)
    assert source.confirmed_events == events  # dropped by policy: reported, in order
    assert collector.ids() == [e.message_id for e in events if e is not long_one]
    assert _sample(metrics, "events_dropped", reason="routing_key_too_long") == 1


@pytest.mark.amqp
async def test_malformed_event_is_dropped_loudly_not_fatal(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    collector = Collector()
    await collector.bind(amqp_connection, exchange)
    naive = CaughtEvent("salesdb", "ingres", "ev", datetime(2026, 1, 1), None)  # noqa: DTZ001 (a naive time on purpose)
    events = [*_events(2), naive, *_events(2)]
    source = RecordingSource(events)
    metrics = Metrics()
    async with _publisher(_config(amqp_url, exchange), metrics) as publisher:
        await publisher.run(source)
        await collector.wait_for(4)
    assert source.confirmed_events == events
    assert collector.ids() == [e.message_id for e in events if e is not naive]
    assert _sample(metrics, "events_dropped", reason="bad_event") == 1


@pytest.mark.amqp
async def test_gap_marker_published_in_line_with_events(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    collector = Collector()
    await collector.bind(amqp_connection, exchange)
    before, after = _events(5), _events(5)
    source = RecordingSource(before, close=False)
    marker = GapMarker("salesdb", T0, T0 + timedelta(seconds=90), "ingres connection lost")
    metrics = Metrics()
    async with _publisher(_config(amqp_url, exchange), metrics) as publisher:
        running = asyncio.create_task(publisher.run(source))
        await collector.wait_for(5)
        source.put_nowait(marker)  # while the run waits for more: it goes at once
        await collector.wait_for(6)
        for event in after:
            source.put_nowait(event)
        source.close()
        await running
        await collector.wait_for(11)
    expected = [e.message_id for e in before] + [marker.message_id]
    assert collector.ids() == expected + [e.message_id for e in after]
    _assert_is_gap(collector.messages[5], marker)
    assert source.confirmed_items == [*before, marker, *after]


@pytest.mark.amqp
async def test_gap_marker_from_the_source_published_and_confirmed_in_line(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    collector = Collector()
    await collector.bind(amqp_connection, exchange)
    before, after = _events(3), _events(2)
    marker = GapMarker("salesdb", T0, T0 + timedelta(seconds=90), "ingres connection lost")
    items: list[Item] = [*before, marker, *after]
    source = RecordingSource(items)
    metrics = Metrics()
    async with _publisher(_config(amqp_url, exchange), metrics) as publisher:
        await publisher.run(source)
        await collector.wait_for(6)
    assert collector.ids() == [item.message_id for item in items]
    assert source.confirmed_items == items  # one way in, one order
    _assert_is_gap(collector.messages[3], marker)
    assert _sample(metrics, "events_published") == 6
    assert _sample(metrics, "gap_markers", database="salesdb") == 1  # counted once confirmed
    assert _sample(metrics, "events_confirmed") == 5  # events only
    assert metrics.registry.get_sample_value(
        "dbevent_bridge_raise_to_confirm_seconds_count") == 5


@pytest.mark.amqp
async def test_a_source_of_one_gap_marker_connects_by_itself(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    collector = Collector()
    await collector.bind(amqp_connection, exchange)
    marker = GapMarker("salesdb", T0, T0 + timedelta(seconds=1), "bridge restarted")
    source = RecordingSource([marker])
    async with _publisher(_config(amqp_url, exchange), Metrics()) as publisher:
        await publisher.run(source)
        await collector.wait_for(1)
    _assert_is_gap(collector.messages[0], marker)
    assert source.confirmed_items == [marker]


def _assert_is_gap(message: aio_pika.abc.AbstractIncomingMessage, marker: GapMarker) -> None:
    assert message.message_id == marker.message_id
    assert message.routing_key == "dbevent-bridge.gap"
    assert message.type == "dbevent-bridge.gap"
    assert message.body == gap_body(marker)
    assert message.headers == {"x-dbevent-database": marker.database}


# -- startup -----------------------------------------------------------------------------


@pytest.mark.amqp
async def test_missing_exchange_without_declare_fails_clearly(
    amqp_url: str, unique_name: str
) -> None:
    config = _config(amqp_url, unique_name, declare_exchange=False)
    async with _publisher(config, Metrics()) as publisher:
        with pytest.raises(PublisherStartupError) as info:
            await publisher.start()
    assert f"exchange '{unique_name}' in vhost '/'" in str(info.value)
    assert "does not exist" in str(info.value)


@pytest.mark.amqp
async def test_existing_exchange_is_checked_passively(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    collector = Collector()
    await collector.bind(amqp_connection, exchange)  # declares the exchange
    events = _events(3)
    config = _config(amqp_url, exchange, declare_exchange=False)
    async with _publisher(config, Metrics()) as publisher:
        await publisher.run(RecordingSource(events))
        await collector.wait_for(3)
    assert collector.ids() == [e.message_id for e in events]


@pytest.mark.amqp
async def test_exchange_of_another_type_fails_clearly(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    channel = await amqp_connection.channel()
    await channel.declare_exchange(exchange, "fanout", durable=True)
    async with _publisher(_config(amqp_url, exchange), Metrics()) as publisher:
        with pytest.raises(PublisherStartupError, match="exists with other settings"):
            await publisher.start()


@pytest.mark.amqp
async def test_bad_credentials_fail_clearly_without_the_password(amqp_url: str) -> None:
    url = amqp_url.replace("guest:guest@", "guest:s3cr3t-pw@")
    async with _publisher(_config(url, "x"), Metrics()) as publisher:
        with pytest.raises(PublisherStartupError) as info:
            await publisher.start()
    text = str(info.value)
    assert "s3cr3t-pw" not in text
    assert "guest:***@" in text
    assert "ACCESS_REFUSED" in text
    assert "s3cr3t-pw" not in repr(publisher._amqp)


@pytest.mark.amqp
async def test_connection_refused_fails_clearly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nobody listens there
    url = f"amqp://guest:pw@127.0.0.1:{port}/"
    async with _publisher(_config(url, "x"), Metrics()) as publisher:
        with pytest.raises(PublisherStartupError, match="cannot connect") as info:
            await publisher.start()
    assert "pw@" not in str(info.value)


@pytest.mark.amqp
async def test_run_waits_for_an_unreachable_broker_then_connects(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first connect is retried (stamina) while the broker is merely
    # unreachable: the bridge catches meanwhile, and publishes once it answers.
    collector = Collector()
    await collector.bind(amqp_connection, exchange)
    events = _events(20)
    source = RecordingSource(events)
    metrics = Metrics()
    broker = URL(amqp_url)
    with TcpProxy(broker.host or "127.0.0.1", broker.port or 5672) as proxy:
        proxy.refusing = True
        url = str(broker.with_port(proxy.port))
        async with _publisher(_config(url, exchange), metrics) as publisher:
            running = asyncio.create_task(publisher.run(source))
            assert await eventually(lambda: _connect_failures(caplog) >= 2, 10)  # retried
            assert not running.done()
            proxy.refusing = False
            await running
        await collector.wait_for(20)
    assert collector.ids() == [e.message_id for e in events]
    assert source.confirmed_events == events
    assert _sample(metrics, "reconnects", side="amqp") == 0  # a first connect, not a reconnect


def _connect_failures(caplog: pytest.LogCaptureFixture) -> int:
    return sum(r.getMessage().startswith("connect failed") for r in caplog.records)


@pytest.mark.amqp
async def test_run_does_not_retry_a_first_connect_that_waiting_cannot_cure(
    amqp_url: str, unique_name: str
) -> None:
    config = _config(amqp_url, unique_name, declare_exchange=False)
    source = RecordingSource(_events(1))
    async with _publisher(config, Metrics()) as publisher:
        with pytest.raises(PublisherStartupError, match="does not exist") as info:
            async with asyncio.timeout(30):
                await publisher.run(source)
    assert not info.value.transient
    assert source.confirmed_events == []


# -- nacks -------------------------------------------------------------------------------


@pytest.mark.amqp
async def test_nacked_events_are_published_again_until_accepted(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    collector = Collector()
    queue = await collector.bind(
        amqp_connection, exchange, {"x-max-length": 5, "x-overflow": "reject-publish"},
        consume=False,
    )
    events = _events(20)
    source = RecordingSource(events)
    metrics = Metrics()
    async with _publisher(_config(amqp_url, exchange), metrics) as publisher:
        running = asyncio.create_task(publisher.run(source))
        # The full queue nacks; wait for the first republish.
        assert await eventually(lambda: _sample(metrics, "events_republished") > 0, 10)
        assert not running.done()
        await collector.consume(queue)  # make room: the retries get through
        await running
        await collector.wait_for(20)
    # Nacked messages were never enqueued, so each event arrives exactly once;
    # the order may differ (see the publisher's docstring on nacks).
    assert sorted(collector.ids(), key=str) == sorted((e.message_id for e in events), key=str)
    assert source.confirmed_events == events  # but reported in order
    assert _sample(metrics, "events_confirmed") == 20
    republished = _sample(metrics, "events_republished")
    assert republished >= 1
    assert _sample(metrics, "events_published") == 20 + republished


async def _refusing_queue(connection: aio_pika.abc.AbstractConnection, exchange: str) -> None:
    """Bind a queue to `exchange` that refuses (nacks) every message published to it."""
    await Collector().bind(connection, exchange,
                           {"x-max-length": 0, "x-overflow": "reject-publish"}, consume=False)


async def _cancel_after(running: asyncio.Task[None], window: float) -> None:
    """Cancel `running` after `window` seconds, in which it must not have ended.

    Not a wait for something: the window in which the probes are counted.
    """
    await asyncio.sleep(window)
    assert not running.done()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


@pytest.mark.amqp
async def test_a_queue_that_always_nacks_is_retried_with_back_off_not_hot(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _refusing_queue(amqp_connection, exchange)
    source = RecordingSource(_events(10))
    metrics = Metrics()
    monkeypatch.setattr(publisher_module, "RETRY_WAIT_INITIAL", 0.1)
    config = _config(amqp_url, exchange)
    async with _publisher(config, metrics) as publisher:
        await _cancel_after(asyncio.create_task(publisher.run(source)), 1.5)
    # 10 first publishes, then ONE probe per back-off period (0.1, 0.2, 0.4, 0.4 ... s):
    # a handful in 1.5 s, where a hot loop would make thousands.
    assert 1 <= _sample(metrics, "events_republished") <= 10
    assert source.confirmed_events == []


@pytest.mark.amqp
async def test_probing_goes_on_after_a_reconnect(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A queue that refuses everything, and the connection cut while the
    # publisher probes: after the reconnect it probes on (one message per
    # back-off), rather than sending the whole window into the full queue.
    await _refusing_queue(amqp_connection, exchange)
    source = RecordingSource(_events(20))
    metrics = Metrics()
    broker = URL(amqp_url)
    with TcpProxy(broker.host or "127.0.0.1", broker.port or 5672) as proxy:
        monkeypatch.setattr(publisher_module, "RETRY_WAIT_INITIAL", 0.1)
        config = _config(str(broker.with_port(proxy.port)), exchange, confirm_window=20)
        async with _publisher(config, metrics) as publisher:
            running = asyncio.create_task(publisher.run(source))
            assert await eventually(lambda: _sample(metrics, "events_republished") > 0, 10)
            before = _sample(metrics, "events_published")
            proxy.cut()
            assert await eventually(
                lambda: _sample(metrics, "reconnects", side="amqp") == 1, 10)
            await _cancel_after(running, 1.0)
    # Pipelining again would publish all 20 at once; probes come one per
    # back-off period (0.1 to 0.4 s), a handful in a second.
    assert _sample(metrics, "events_published") - before <= 10
    assert source.confirmed_events == []


# -- lost connections --------------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy between publisher and broker whose connections can be cut or stalled."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._transports: list[asyncio.WriteTransport] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        """Abort every proxied connection, both sides, at once."""
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    def stall(self) -> None:
        """Hold every byte in both directions (a network that silently stops)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Deliver what was held, in order, and flow again."""
        self._flowing.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._transports += [writer.transport, up_writer.transport]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


@pytest.mark.amqp
async def test_cut_connections_lose_nothing_and_duplicate_only_unconfirmed(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    collector = Collector()
    await collector.bind(amqp_connection, exchange)
    events = _events(2_000)
    source = RecordingSource(events)
    metrics = Metrics()
    async with CuttingProxy("127.0.0.1", _port_of(amqp_url)) as proxy:
        url = amqp_url.replace(f":{_port_of(amqp_url)}/", f":{proxy.port}/")
        cut_at = {300, 900, 1500}
        source.on_confirm = lambda count: proxy.cut() if count in cut_at else None
        async with _publisher(_config(url, exchange), metrics) as publisher:
            await publisher.run(source)
    assert _sample(metrics, "reconnects", side="amqp") == len(cut_at)
    ids = [e.message_id for e in events]
    await collector.wait_for(len(ids))
    received = collector.ids()
    first_seen = list(dict.fromkeys(received))
    assert first_seen == ids  # nothing lost, first deliveries in order
    duplicates = len(received) - len(ids)
    assert duplicates <= _sample(metrics, "events_republished")
    assert source.confirmed_events == events
    assert _sample(metrics, "events_confirmed") == len(events)
    # Duplicates are exact copies of the first delivery.
    by_id = {m.message_id: m for m in collector.messages}
    for message in collector.messages:
        assert message.body == by_id[message.message_id].body


@pytest.mark.amqp
async def test_confirm_timeouts_publish_again_without_losing_anything(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    collector = Collector()
    await collector.bind(amqp_connection, exchange)
    events = _events(500)
    source = RecordingSource(events)
    metrics = Metrics()
    async with CuttingProxy("127.0.0.1", _port_of(amqp_url)) as proxy:
        url = amqp_url.replace(f":{_port_of(amqp_url)}/", f":{proxy.port}/")
        source.on_confirm = lambda count: proxy.stall() if count == 100 else None
        config = _config(url, exchange, publish_timeout=0.5, confirm_window=64)
        async with _publisher(config, metrics) as publisher:
            running = asyncio.create_task(publisher.run(source))
            # No confirm comes back: the in-flight publishes time out, then a probe goes.
            assert await eventually(lambda: _sample(metrics, "events_republished") > 0, 10)
            proxy.resume()
            await running
    ids = [e.message_id for e in events]
    await collector.wait_for(len(ids))
    received = collector.ids()
    assert list(dict.fromkeys(received)) == ids
    assert len(received) - len(ids) <= _sample(metrics, "events_republished")
    assert source.confirmed_events == events
    assert _sample(metrics, "reconnects", side="amqp") == 0


@pytest.mark.amqp
async def test_channel_closed_by_the_broker_is_reopened_and_declared_again(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    # Deleting the exchange mid-flow makes the broker close the publishing
    # channel (404 on basic.publish); the publisher must reconnect, declare the
    # exchange again and carry on.
    channel = await amqp_connection.channel()
    events = _events(2_000)
    source = RecordingSource(events)
    deletions: list[asyncio.Task[Any]] = []
    source.on_confirm = lambda count: (
        deletions.append(asyncio.create_task(channel.exchange_delete(exchange)))
        if count == 500 else None
    )
    metrics = Metrics()
    async with _publisher(_config(amqp_url, exchange), metrics) as publisher:
        await publisher.run(source)
    await asyncio.gather(*deletions)
    assert source.confirmed_events == events
    assert _sample(metrics, "reconnects", side="amqp") >= 1
    await channel.get_exchange(exchange, ensure=True)  # declared again


@pytest.mark.amqp
async def test_missing_exchange_after_a_reconnect_is_waited_for(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    # With declare_exchange=False a vanished exchange cannot be fixed by the
    # bridge: it keeps retrying (with back-off) until an operator declares it.
    collector = Collector()
    await collector.bind(amqp_connection, exchange)
    channel = await amqp_connection.channel()
    source = RecordingSource(_events(100), close=False)
    deletions: list[asyncio.Task[Any]] = []
    source.on_confirm = lambda count: (
        deletions.append(asyncio.create_task(channel.exchange_delete(exchange)))
        if count == 100 else None
    )
    metrics = Metrics()
    config = _config(amqp_url, exchange, declare_exchange=False)
    async with _publisher(config, metrics) as publisher:
        running = asyncio.create_task(publisher.run(source))
        await collector.wait_for(100)
        assert await eventually(lambda: len(deletions) == 1, 10)
        await asyncio.gather(*deletions)
        late = _events(10)
        for event in late:
            source.put_nowait(event)
        source.close()
        # Publishing fails, reconnecting too.
        assert await eventually(lambda: not publisher.is_connected, 10)
        # Not a wait for something: a window in which the publisher must not give up.
        await asyncio.sleep(0.3)
        assert not running.done()
        await collector.bind(amqp_connection, exchange, consume=False)  # the operator's fix
        await running
    assert source.confirmed_count == 110
    assert _sample(metrics, "reconnects", side="amqp") == 1


@pytest.fixture
def private_node(tmp_path: Path) -> Iterator[RabbitNode]:
    """A throw-away broker of our own, which the test may stop, kill and start."""
    require_rabbitmq_server()
    with RabbitNode(tmp_path) as node:
        yield node


@pytest.mark.amqp
@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_broker_restart_loses_no_confirmed_event(private_node: RabbitNode, how: str) -> None:
    exchange, queue_name = "dbevents", "durable-copy"
    setup = await aio_pika.connect(private_node.url)
    channel = await setup.channel()
    await channel.declare_exchange(exchange, "topic", durable=True)
    queue = await channel.declare_queue(queue_name, durable=True)
    await queue.bind(exchange, "#")
    await setup.close()

    events = _events(3_000)
    source = RecordingSource(events[:1_000], close=False)
    restart_now = asyncio.Event()
    source.on_confirm = lambda count: restart_now.set() if count == 1_000 else None
    metrics = Metrics()
    async with _publisher(_config(private_node.url, exchange), metrics) as publisher:
        running = asyncio.create_task(publisher.run(source))
        await restart_now.wait()
        # Blocking calls in a thread: the publisher's loop keeps running meanwhile,
        # publishing the rest while the broker goes down.
        going_down = asyncio.create_task(asyncio.to_thread(getattr(private_node, how)))
        for event in events[1_000:2_000]:
            source.put_nowait(event)
        await going_down
        # The 1,000 above race the broker going down and may all be confirmed first;
        # these come after it is gone, so they need a new connection whatever the race did.
        for event in events[2_000:]:
            source.put_nowait(event)
        source.close()
        await asyncio.to_thread(private_node.start)
        await running
    assert source.confirmed_events == events
    assert _sample(metrics, "reconnects", side="amqp") >= 1

    reader = await aio_pika.connect(private_node.url)
    try:
        channel = await reader.channel()
        queue = await channel.declare_queue(queue_name, durable=True)
        received: list[str | None] = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            received.append(message.message_id)
    finally:
        await reader.close()
    # Every event was confirmed, so every one survived the restart (persistent
    # messages, durable queue); those whose confirm was lost may come twice.
    assert list(dict.fromkeys(received)) == [e.message_id for e in events]
    assert len(received) - len(events) <= _sample(metrics, "events_republished")


def _port_of(url: str) -> int:
    port = aio_pika.connection.make_url(url).port
    assert port is not None
    return port


async def test_queue_source_hands_out_in_order_then_none() -> None:
    source = QueueSource(maxsize=2)
    events = _events(3)
    putting = asyncio.create_task(_put_all(source, events))
    received = [await source.get() for _ in events]
    await putting
    assert received == events
    with pytest.raises(RuntimeError, match="closed"):
        source.put_nowait(events[0])
    assert await source.get() is None


async def _put_all(source: QueueSource, events: list[CaughtEvent]) -> None:
    for event in events:
        await source.put(event)  # waits for room: maxsize is 2
    source.close()
