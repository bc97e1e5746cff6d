"""A sample consumer for the demo stack: prints every message it receives.

One JSON object per line on stdout (routing key, properties, headers, body),
then the message is acknowledged; so `docker compose logs -f consumer` shows
each DBEvent the bridge published. It consumes an existing queue (declared by
config/rabbitmq/definitions.json) and never declares topology itself.

    python print_consumer.py [--url URL] [--queue NAME] [--max-messages N]

Defaults come from CONSUMER_AMQP_URL and CONSUMER_QUEUE. Needs aio-pika, which
the bridge's image already has.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

CONNECT_ATTEMPTS = 30
CONNECT_RETRY_SECONDS = 2.0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print every message of a RabbitMQ queue.")
    parser.add_argument("--url", default=os.environ.get("CONSUMER_AMQP_URL",
                                                        "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--queue", default=os.environ.get("CONSUMER_QUEUE", "ingres.dbevents.demo"))
    parser.add_argument("--max-messages", type=int, default=0,
                        help="stop after this many messages (0: run until SIGTERM/SIGINT)")
    return parser.parse_args(argv)


def describe(message: AbstractIncomingMessage) -> dict[str, Any]:
    """The printable form of one message: text bodies as text, others as base64."""
    record: dict[str, Any] = {
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "message_id": message.message_id,
        "timestamp": message.timestamp.isoformat() if message.timestamp else None,
        "content_type": message.content_type,
        "headers": {key: _jsonable(value) for key, value in (message.headers or {}).items()},
        "redelivered": message.redelivered,
    }
    try:
        record["body"] = message.body.decode("utf-8")
    except UnicodeDecodeError:
        record["body_base64"] = base64.b64encode(message.body).decode("ascii")
    return record


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # datetimes, decimals: readable is enough here


async def _connect(url: str) -> AbstractRobustConnection:
    """Connect, retrying for a while: the broker may still be starting."""
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return await aio_pika.connect_robust(url)
        except (OSError, aio_pika.exceptions.AMQPConnectionError) as exc:
            if attempt == CONNECT_ATTEMPTS:
                raise
            print(f"print_consumer: broker not ready ({exc}); retrying", file=sys.stderr)
            await asyncio.sleep(CONNECT_RETRY_SECONDS)
    raise AssertionError("unreachable")


async def consume(url: str, queue_name: str, max_messages: int) -> int:
    """Print and acknowledge messages from `queue_name` until stopped; returns the count."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    printed = 0
    connection = await _connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        queue = await channel.get_queue(queue_name, ensure=True)  # passive: must exist

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal printed
            print(json.dumps(describe(message), ensure_ascii=False), flush=True)
            await message.ack()
            printed += 1
            if max_messages and printed >= max_messages:
                stop.set()

        tag = await queue.consume(on_message)
        print(f"print_consumer: waiting for messages on {queue_name!r}", file=sys.stderr)
        await stop.wait()
        await queue.cancel(tag)
    return printed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 0 once stopped."""
    args = _parse_args(argv)
    asyncio.run(consume(args.url, args.queue, args.max_messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
