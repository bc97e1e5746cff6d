"""The raw ceiling: a bare aio-pika publisher with confirms.

Run as `python -m tests.benchmarks.rawpub JSON`.

It publishes exactly the messages the bridge would (same bodies, properties,
routing keys, persistent, mandatory) to the same exchange, keeping `window`
publishes unconfirmed at once, and prints one JSON line per window with the
elapsed wall time and this process's CPU time. Messages are built before the
clock starts: this is the broker + client ceiling, nothing else.

JSON: {"url", "exchange", "count", "names", "text", "windows": [...]}.

With {"rate", "seconds"} instead it publishes at a steady rate, as the bridge
sees events at a steady rate: each message is built when it is due (its text
is `time.time()` then, so the driver's consumer can measure publish →
delivery) and published at once, unconfirmed ones bounded by 1,024. It prints
one line: messages, wall time and this process's CPU time over the run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aio_pika

from bridge.event import CaughtEvent
from bridge.message import build_event_outgoing
from bridge.routing import RoutingKeyBuilder
from tests.benchmarks.child import reply
from tests.benchmarks.simhost import event_name, filler_text


def build_event_message(event: CaughtEvent) -> aio_pika.Message:
    """The bridge's message for `event` (`build_event_outgoing`) as an `aio_pika.Message`."""
    outgoing = build_event_outgoing(event)
    props = outgoing.properties
    return aio_pika.Message(
        body=outgoing.body,
        content_type=props.content_type,
        delivery_mode=props.delivery_mode,
        priority=props.priority,
        message_id=props.message_id,
        timestamp=props.timestamp,
        app_id=props.app_id,
        type=props.message_type,
        headers=dict(props.headers or {}),  # a copy: the bridge's cached dict stays untouched
    )


def messages(count: int, names: int, text: int) -> list[tuple[str, aio_pika.Message]]:
    """The (routing key, message) pairs the bridge would publish for a burst."""
    router = RoutingKeyBuilder()
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        event = CaughtEvent("demodb", "ingres", event_name(i % names), now,
                            filler_text(i % 1000, text))
        out.append((router.for_event(event), build_event_message(event)))
    return out


async def publish_all(exchange: aio_pika.abc.AbstractExchange,
                      batch: list[tuple[str, aio_pika.Message]], window: int) -> None:
    """Publish every message with at most `window` unconfirmed."""
    slots = asyncio.Semaphore(window)
    failures: list[BaseException] = []

    async def one(key: str, message: aio_pika.Message) -> None:
        try:
            await exchange.publish(message, routing_key=key, mandatory=True)
        except Exception as exc:
            failures.append(exc)
        finally:
            slots.release()

    tasks = set()
    for key, message in batch:
        await slots.acquire()
        task = asyncio.create_task(one(key, message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    if failures:
        raise RuntimeError(f"{len(failures)} publishes failed: {failures[0]!r}")


async def paced(exchange: aio_pika.abc.AbstractExchange, rate: float, seconds: float) -> int:
    """Publish `rate` messages/s for `seconds`, each built when due; return how many."""
    router = RoutingKeyBuilder()
    slots = asyncio.Semaphore(1024)
    failures: list[BaseException] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(key: str, message: aio_pika.Message) -> None:
        try:
            await exchange.publish(message, routing_key=key, mandatory=True)
        except Exception as exc:
            failures.append(exc)
        finally:
            slots.release()

    total = int(rate * seconds)
    start = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            event = CaughtEvent("demodb", "ingres", event_name(0), datetime.now(UTC),
                                repr(time.time()).encode())
            await slots.acquire()
            task = asyncio.create_task(one(router.for_event(event), build_event_message(event)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
    await asyncio.gather(*tasks)
    if failures:
        raise RuntimeError(f"{len(failures)} publishes failed: {failures[0]!r}")
    return sent


async def main(config: dict[str, Any]) -> None:
    """Publish the burst once per window and report each (or publish at a steady rate)."""
    connection = await aio_pika.connect(config["url"])
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(config["exchange"], ensure=True)
        if "rate" in config:
            cpu0, t0 = time.process_time(), time.perf_counter()
            sent = await paced(exchange, float(config["rate"]), float(config["seconds"]))
            reply({"ok": True, "sent": sent, "elapsed": time.perf_counter() - t0,
                   "cpu": time.process_time() - cpu0})
            return
        for window in config["windows"]:
            batch = messages(int(config["count"]), int(config["names"]), int(config["text"]))
            cpu0, t0 = time.process_time(), time.perf_counter()
            await publish_all(exchange, batch, int(window))
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            reply({"ok": True, "window": window, "elapsed": elapsed, "cpu": cpu})
    finally:
        await connection.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
