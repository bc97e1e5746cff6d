"""The publisher's plain core against the real broker: one channel, its window, the outcomes.

The core reports nacks, timeouts and a lost channel; it never publishes
again, waits or reconnects by itself. Those tests check both halves: the
outcome is recorded, and nothing else happens until the caller acts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aio_pika
import aio_pika.abc
import aiormq
import pytest
from yarl import URL

from bridge.confirms import Composer, ConfirmWindow, Entry, State
from bridge.event import CaughtEvent, GapMarker, Item
from bridge.message import MessageFormat
from bridge.metrics import Metrics
from bridge.routing import DEFAULT_TEMPLATE, RoutingKeyBuilder
from tests.faults.proxy import TcpProxy
from tests.metric_value import metric_value
from tests.polling import eventually

pytestmark = pytest.mark.amqp

T0 = datetime(2026, 11, 25, 8, 22, 23, 123456, tzinfo=UTC)


def _events(count: int) -> list[CaughtEvent]:
    return [CaughtEvent("salesdb", "ingres", f"ev{i % 3}", T0 + timedelta(microseconds=i),
                        f"text {i}".encode()) for i in range(count)]


class Harness:
    """Entries for a window, and what the window reported back, in order."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.composer = Composer(RoutingKeyBuilder(DEFAULT_TEMPLATE), MessageFormat(),
                                 "dbevent-bridge.gap", metrics)
        self.reported: list[Item] = []
        self.changes = 0

    def entries(self, items: Sequence[Item]) -> list[Entry]:
        return [self.composer.entry(item)
                for item in items]

    def changed(self) -> None:
        self.changes += 1

    def window(self, channel: aiormq.Channel, exchange: str, items: Sequence[Item] = (),
               publish_timeout: float = 10.0, carried: Sequence[Entry] = ()) -> ConfirmWindow:
        window = ConfirmWindow(channel, exchange, publish_timeout, self.metrics, self.changed,
                               carried=carried)
        for entry in self.entries(items):
            window.add(entry)
        return window

    def report(self, window: ConfirmWindow) -> None:
        for entry in window.settled():
            self.reported.append(entry.item)


@asynccontextmanager
async def _channel(url: str) -> AsyncIterator[tuple[aio_pika.abc.AbstractConnection,
                                                    aiormq.Channel]]:
    """A connection of its own and a confirming channel on it, as a session opens one."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
        underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
        yield connection, underlay
    finally:
        await connection.close()


async def _queue(connection: aio_pika.abc.AbstractConnection, exchange: str,
                 arguments: dict[str, Any] | None = None) -> aio_pika.abc.AbstractQueue:
    """Declare `exchange` and bind an exclusive queue to it with '#'."""
    channel = await connection.channel()
    await channel.declare_exchange(exchange, "topic", durable=True)
    queue = await channel.declare_queue(exclusive=True, arguments=arguments)
    await queue.bind(exchange, "#")
    return queue


async def _ids(queue: aio_pika.abc.AbstractQueue, count: int) -> list[str | None]:
    """The message ids of the first `count` messages in `queue`."""
    ids: list[str | None] = []

    async def more() -> bool:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            ids.append(message.message_id)
        return len(ids) >= count

    assert await eventually(more, 30, every=0.005)
    return ids


async def _settled(window: ConfirmWindow) -> None:
    assert await eventually(lambda: window.in_flight == 0, 30)


@pytest.fixture
async def exchange(unique_name: str,
                   amqp_connection: aio_pika.abc.AbstractConnection) -> AsyncIterator[str]:
    yield unique_name
    channel = await amqp_connection.channel()
    await channel.exchange_delete(unique_name)
    await channel.close()


async def test_entries_go_out_in_order_and_come_back_as_a_settled_prefix_in_order(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    queue = await _queue(amqp_connection, exchange)
    harness = Harness(Metrics())
    marker = GapMarker("salesdb", T0, T0 + timedelta(seconds=5), "ingres connection lost")
    too_long = CaughtEvent("salesdb", "ingres", "n" * 300, T0, None)
    items: list[Item] = [*_events(100), marker, too_long, *_events(3)]
    async with _channel(amqp_url) as (_, channel):
        window = harness.window(channel, exchange, items)
        assert len(window) == len(items)
        window.send()
        await _settled(window)
        harness.report(window)
        assert harness.reported == items  # the dropped one in its turn
        assert len(window) == 0
        assert window.failed == 0
        assert not window.lost
        assert harness.changes == len(items) - 1  # one call per outcome; none for the drop
    sent = [item.message_id for item in items if item is not too_long]
    assert await _ids(queue, len(sent)) == sent
    metrics = harness.metrics
    assert metric_value(metrics, "events_published") == len(sent)
    assert metric_value(metrics, "events_confirmed") == len(sent) - 1  # not the marker
    assert metric_value(metrics, "events_dropped", reason="routing_key_too_long") == 1
    assert metric_value(metrics, "events_republished") == 0


async def test_a_returned_message_is_settled_and_counted(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    channel_ = await amqp_connection.channel()
    await channel_.declare_exchange(exchange, "topic", durable=True)  # no queue bound
    harness = Harness(Metrics())
    events = _events(5)
    async with _channel(amqp_url) as (_, channel):
        window = harness.window(channel, exchange, events)
        window.send()
        await _settled(window)
        harness.report(window)
    assert harness.reported == events
    assert metric_value(harness.metrics, "events_returned") == 5


async def test_nacks_are_an_outcome_the_caller_acts_on(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    full = await _queue(amqp_connection, exchange, {"x-max-length": 0,
                                                    "x-overflow": "reject-publish"})
    harness = Harness(Metrics())
    events = _events(10)
    async with _channel(amqp_url) as (_, channel):
        window = harness.window(channel, exchange, events)
        window.send()
        await _settled(window)
        assert window.failed == 10
        assert not window.lost
        assert window.settled() == []
        assert all(entry.state is State.NACKED for entry in window.entries)
        # Nothing is published again until the caller says so.
        window.send()
        assert metric_value(harness.metrics, "events_published") == 10
        await full.delete()
        room = await _queue(amqp_connection, exchange)
        assert window.requeue() == 10
        assert window.failed == 0
        window.send()
        await _settled(window)
        harness.report(window)
    assert harness.reported == events
    assert await _ids(room, 10) == [e.message_id for e in events]
    assert metric_value(harness.metrics, "events_republished") == 10
    assert metric_value(harness.metrics, "events_published") == 20


async def test_no_confirm_within_the_publish_timeout_is_a_timeout_not_a_lost_channel(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    queue = await _queue(amqp_connection, exchange)
    broker = URL(amqp_url)
    harness = Harness(Metrics())
    events = _events(20)
    with TcpProxy(broker.host or "127.0.0.1", broker.port or 5672) as proxy:
        async with _channel(str(broker.with_port(proxy.port))) as (_, channel):
            window = harness.window(channel, exchange, events, publish_timeout=0.3)
            proxy.pause()  # a network that silently stops: no confirm comes back
            window.send()
            await _settled(window)
            assert window.failed == 20
            assert not window.lost
            assert all(entry.state is State.TIMED_OUT for entry in window.entries)
            proxy.resume()
            # The broker got them after all; the late acks change nothing.
            assert await _ids(queue, 20) == [e.message_id for e in events]
            assert window.settled() == []
            assert window.failed == 20
            window.requeue()
            window.send()
            await _settled(window)
            harness.report(window)
    assert harness.reported == events
    assert await _ids(queue, 20) == [e.message_id for e in events]  # the copies


async def test_a_lost_channel_is_reported_and_a_new_window_carries_on_in_order(
    amqp_url: str, exchange: str, amqp_connection: aio_pika.abc.AbstractConnection
) -> None:
    harness = Harness(Metrics())
    first, second = _events(3), _events(50)
    async with _channel(amqp_url) as (_, channel):
        # The exchange does not exist: the broker closes the channel (404).
        window = harness.window(channel, exchange, first)
        window.send()
        await _settled(window)
        assert window.lost
        assert window.failed == 3
        for entry in harness.entries(second):  # a feeder may go on adding meanwhile
            window.add(entry)
        await window.abandon()
        assert all(entry.state is State.QUEUED for entry in window.entries)
    queue = await _queue(amqp_connection, exchange)
    async with _channel(amqp_url) as (_, channel):
        carried = list(window.entries)
        again = harness.window(channel, exchange, carried=carried)
        assert len(again) == 53
        assert again.failed == 0
        assert not again.lost
        again.send()
        await _settled(again)
        harness.report(again)
    assert harness.reported == first + second
    assert await _ids(queue, 53) == [e.message_id for e in first + second]
