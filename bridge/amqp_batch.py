"""Publish several messages on a confirming aiormq channel with one frame write.

aiormq's `Channel.basic_publish` takes the channel lock, queues one frame for
the writer task and creates one confirmation future per message, so each
message costs a lock round, a queue hop, a socket write (a syscall) and, in
its caller, a task. At a few thousand messages a second that per-message path
is most of the publisher's CPU. `publish_batch` does the same bookkeeping for
many messages under one lock acquisition and hands the writer ONE frame that
holds them all: one queue hop and one write for the batch.

It relies on aiormq internals that `basic_publish` itself uses, which is why
pyproject pins aiormq to the versions this module is tested with (7.2.x):
`Channel.lock`, `delivery_tag`, `confirmations` (delivery tag -> future,
resolved by aiormq's confirm and return handlers), `message_id_delivery_tag`
(maps a basic.return back to its delivery tag by message_id), `write_queue`,
`max_content_size` and `create_future` (futures the channel fails when it
closes). The rollback on cancellation is basic_publish's: while the frame has
not reached the write queue the broker has not seen it, so its delivery tags
are given back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

# What each confirmation future resolves to: the broker's ack (or a returned
# message, aiormq.abc.DeliveredMessage); a nack fails it with DeliveryError.
Confirmation = asyncio.Future[aiormq.abc.ConfirmationFrameType | aiormq.abc.DeliveredMessage]


async def publish_batch(
    channel: aiormq.Channel,
    exchange: str,
    messages: Sequence[tuple[str, bytes, spec.Basic.Properties]],
) -> list[Confirmation]:
    """Publish (routing key, body, properties) messages, mandatory, in this order.

    Returns once the frame is queued for the writer, with one confirmation
    future per message, in order. Every message must carry a message_id (it
    maps a basic.return to its message). If cancelled before the frame is
    queued, nothing was published and the delivery tags are given back.
    """
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    async with channel.lock:
        first_tag = channel.delivery_tag + 1
        frames: list[spec.Basic.Publish | ContentHeader | ContentBody] = []
        confirmations: list[Confirmation] = []
        try:
            for routing_key, body, properties in messages:
                confirmations.append(_register(channel, properties))
                frames.append(spec.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                 mandatory=True))
                frames.append(ContentHeader(properties=properties, body_size=len(body)))
                frames.extend(_split(body, channel.max_content_size))
            await channel.write_queue.put(ChannelFrame.marshall(channel.number, frames))
        except BaseException:
            _give_back(channel, first_tag, messages, confirmations)
            raise
    return confirmations


def _register(channel: aiormq.Channel, properties: spec.Basic.Properties) -> Confirmation:
    message_id = properties.message_id
    if not message_id:
        raise ValueError("a batched message needs a message_id")
    channel.delivery_tag += 1
    tag = channel.delivery_tag
    confirmation: Confirmation = channel.create_future()
    channel.confirmations[tag] = confirmation
    channel.message_id_delivery_tag[message_id] = tag
    confirmation.add_done_callback(partial(_forget_message_id, channel, message_id, tag))
    return confirmation


def _forget_message_id(channel: aiormq.Channel, message_id: str, tag: int,
                       _: Confirmation) -> None:
    # As basic_publish does: once settled, a return can no longer refer to it.
    if channel.message_id_delivery_tag.get(message_id) == tag:
        del channel.message_id_delivery_tag[message_id]


def _give_back(channel: aiormq.Channel, first_tag: int,
               messages: Sequence[tuple[str, bytes, spec.Basic.Properties]],
               confirmations: list[Confirmation]) -> None:
    """Undo the registrations of a batch the broker never saw (still under the lock)."""
    for offset, confirmation in enumerate(confirmations):
        channel.confirmations.pop(first_tag + offset, None)
        confirmation.cancel()
        _forget_message_id(channel, messages[offset][2].message_id or "", first_tag + offset,
                           confirmation)
    channel.delivery_tag = first_tag - 1


def _split(body: bytes, max_size: int) -> list[ContentBody]:
    """The body frames of a message (none for an empty body), at most `max_size` bytes each."""
    return [ContentBody(body[i:i + max_size]) for i in range(0, len(body), max_size)]
