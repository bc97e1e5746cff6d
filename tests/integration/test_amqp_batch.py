"""bridge.amqp_batch against the real broker: what aiormq's basic_publish guarantees, per batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.abc
import pytest
from pamqp import commands as spec

from bridge.amqp_batch import publish_batch

pytestmark = pytest.mark.amqp


def _props(message_id: str) -> spec.Basic.Properties:
    return spec.Basic.Properties(message_id=message_id, delivery_mode=2)


@pytest.fixture
async def channel(
    amqp_connection: aio_pika.abc.AbstractConnection, unique_name: str
) -> AsyncIterator[tuple[aiormq.Channel, aio_pika.abc.AbstractQueue]]:
    """A confirming aiormq channel and an exclusive queue bound to `unique_name` with '#'."""
    consumer = await amqp_connection.channel()
    exchange = await consumer.declare_exchange(unique_name, "topic", auto_delete=True)
    queue = await consumer.declare_queue(exclusive=True)
    await queue.bind(exchange, "#")
    publishing = await amqp_connection.channel(publisher_confirms=True, on_return_raises=False)
    underlay = cast(aiormq.Channel, await publishing.get_underlay_channel())
    yield underlay, queue
    await publishing.close()
    await consumer.close()


async def _bodies(queue: aio_pika.abc.AbstractQueue, count: int) -> list[bytes]:
    out: list[bytes] = []
    async with asyncio.timeout(30), queue.iterator(no_ack=True) as messages:
        async for message in messages:
            out.append(message.body)
            if len(out) == count:
                break
    return out


async def test_a_batch_arrives_in_order_each_message_confirmed(
    channel: tuple[aiormq.Channel, aio_pika.abc.AbstractQueue], unique_name: str
) -> None:
    chan, queue = channel
    # 300 KiB crosses frame_max (128 KiB by default): that body travels in several frames.
    bodies = [f"m{i}".encode() for i in range(500)] + [b"", b"x" * (300 * 1024)]
    confirmations = await publish_batch(
        chan, unique_name, [("a.b", body, _props(f"id{i}")) for i, body in enumerate(bodies)])
    results = await asyncio.gather(*confirmations)
    assert all(isinstance(r, spec.Basic.Ack) for r in results)
    assert await _bodies(queue, len(bodies)) == bodies
    assert not chan.confirmations
    assert not chan.message_id_delivery_tag


async def test_an_unroutable_message_resolves_as_returned_the_others_as_acked(
    channel: tuple[aiormq.Channel, aio_pika.abc.AbstractQueue], unique_name: str,
    amqp_connection: aio_pika.abc.AbstractConnection,
) -> None:
    chan, _queue = channel
    direct = f"{unique_name}.direct"
    setup = await amqp_connection.channel()
    await setup.declare_exchange(direct, "direct", auto_delete=True)
    bound = await setup.declare_queue(exclusive=True)
    await bound.bind(direct, "bound")
    confirmations = await publish_batch(chan, direct, [
        ("bound", b"1", _props("r1")), ("nowhere", b"2", _props("r2")),
        ("bound", b"3", _props("r3")),
    ])
    first, returned, last = await asyncio.gather(*confirmations)
    assert isinstance(first, spec.Basic.Ack)
    assert isinstance(returned, aiormq.abc.DeliveredMessage)
    assert returned.body == b"2"
    assert isinstance(last, spec.Basic.Ack)
    await setup.close()


async def test_cancelled_before_the_frame_is_queued_publishes_nothing_and_gives_tags_back(
    channel: tuple[aiormq.Channel, aio_pika.abc.AbstractQueue], unique_name: str
) -> None:
    chan, queue = channel
    tag = chan.delivery_tag
    async with chan.lock:  # the batch waits for the channel
        waiting = asyncio.create_task(
            publish_batch(chan, unique_name, [("a", b"never", _props("n1"))]))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert chan.delivery_tag == tag
    assert not chan.confirmations
    # The next batch gets the next tags and its confirms, as if nothing happened.
    confirmations = await publish_batch(chan, unique_name, [("a", b"after", _props("n2"))])
    assert isinstance(await confirmations[0], spec.Basic.Ack)
    assert await _bodies(queue, 1) == [b"after"]


async def test_cancelled_while_the_write_queue_is_full_gives_every_tag_of_the_batch_back(
    channel: tuple[aiormq.Channel, aio_pika.abc.AbstractQueue], unique_name: str
) -> None:
    chan, queue = channel
    tag = chan.delivery_tag
    # A writer that does not keep up: the channel's write queue, full. (The real
    # one is drained by the connection's writer task as soon as it runs.)
    real_queue = chan.write_queue
    chan.write_queue = asyncio.Queue(maxsize=1)
    chan.write_queue.put_nowait(aiormq.abc.ChannelFrame.marshall(chan.number, []))
    waiting = asyncio.create_task(publish_batch(
        chan, unique_name, [("a", b"x", _props("f1")), ("a", b"y", _props("f2"))]))
    await asyncio.sleep(0)  # registered its confirmations, now waits for room
    assert chan.delivery_tag == tag + 2
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    chan.write_queue = real_queue
    assert chan.delivery_tag == tag
    assert not chan.confirmations
    await asyncio.sleep(0)  # the give-back's done callbacks
    assert not chan.message_id_delivery_tag
    confirmations = await publish_batch(chan, unique_name, [("a", b"z", _props("f3"))])
    assert isinstance(await confirmations[0], spec.Basic.Ack)
    assert await _bodies(queue, 1) == [b"z"]


async def test_a_closed_channel_is_refused_before_anything_is_registered(
    channel: tuple[aiormq.Channel, aio_pika.abc.AbstractQueue], unique_name: str
) -> None:
    chan, _queue = channel
    await chan.close()
    with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
        await publish_batch(chan, unique_name, [("a", b"x", _props("c1"))])


async def test_a_message_without_message_id_is_refused(
    channel: tuple[aiormq.Channel, aio_pika.abc.AbstractQueue], unique_name: str
) -> None:
    chan, _queue = channel
    tag = chan.delivery_tag
    with pytest.raises(ValueError, match="message_id"):
        await publish_batch(chan, unique_name, [
            ("a", b"x", _props("ok1")), ("a", b"y", spec.Basic.Properties())])
    assert chan.delivery_tag == tag
    assert not chan.confirmations
