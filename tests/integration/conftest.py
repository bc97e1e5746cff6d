"""Fixtures for end-to-end tests: the DBMS simulator, a bound subscriber queue, a raiser."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from bridge.openapi import Session
from bridge.settings import Settings, load_settings
from bridge.sim.server import ServerThread

# Events the tests register: plain, owner-qualified (another owner, granted),
# and names that only survive routing when percent-encoded.
EVENTS = ("order_created", "alice.audit_log", '"price#changed"', '"rate.limit"')


@pytest.fixture
def sim() -> Iterator[ServerThread]:
    """A DBMS simulator on an ephemeral port with the test events created."""
    with ServerThread() as server:
        server.create_event("ingres", "order_created")
        server.create_event("alice", "audit_log")
        server.grant("alice", "audit_log", "ingres", ["register", "raise"])
        server.create_event("ingres", "price#changed")
        server.create_event("ingres", "rate.limit")
        yield server


def bridge_overrides(amqp_url: str, target: str, exchange: str, spool: Path) -> dict[str, Any]:
    """The nested settings a test bridge runs with (http off, quick reconnects)."""
    return {
        "ingres": {
            "target": target,
            "events": list(EVENTS),
            "reconnect_backoff_min": 0.05,
            "reconnect_backoff_max": 0.5,
            "get_event_timeout": 0.2,
        },
        "amqp": {"url": amqp_url, "exchange": exchange},
        "spool": {"path": str(spool)},
        "http": {"listen": "off"},
        "shutdown": {"drain_timeout": 10},
    }


@pytest.fixture
def settings(
    amqp_url: str, sim: ServerThread, unique_name: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """Settings of a bridge wired to `sim` and a fresh exchange."""
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "no-secrets"))
    overrides = bridge_overrides(amqp_url, sim.target(), unique_name, tmp_path / "spool.db")
    return load_settings(overrides)


@pytest.fixture
async def subscriber(
    amqp_connection: aio_pika.abc.AbstractConnection, unique_name: str
) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """A queue bound with '#' to the test's exchange (declared here, as the bridge does)."""
    channel = await amqp_connection.channel()
    exchange = await channel.declare_exchange(
        unique_name, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="#")
    yield queue
    await exchange.delete()


@dataclass(frozen=True)
class Raised:
    """One RAISE the test sent, and what the subscriber must see for it."""

    owner: str
    name: str
    text: bytes | None
    # What the RAISE carries when it differs from `text`: an empty literal ''
    # is delivered as "no text".
    literal: bytes | None = None


def _literal(text: bytes) -> bytes:
    return b"'" + text.replace(b"'", b"''") + b"'"


def sample(i: int) -> Raised:
    """The i-th event of a varied stream: every name, every kind of text."""
    owner, name = [
        ("ingres", "order_created"),
        ("alice", "audit_log"),
        ("ingres", "price#changed"),
        ("ingres", "rate.limit"),
    ][i % 4]
    texts: list[bytes | None] = [
        f"#{i}".encode(),
        None,
        b"",
        b"x",
        f"#{i} ".encode() + b"y" * (256 - len(f"#{i} ")),
        f"#{i} it's \"quoted\"".encode(),
        f"#{i} naïve \u2013 東京".encode(),
        f"#{i} ".encode() + b"\xff\xfe caf\xe9",
    ]
    text = texts[(i // 4) % len(texts)]
    if text == b"":
        return Raised(owner, name, None, literal=b"")
    return Raised(owner, name, text)


def raise_statement(event: Raised) -> bytes:
    """The RAISE DBEVENT statement for `event`."""
    ref = {"order_created": "order_created", "audit_log": "alice.audit_log",
           "price#changed": '"price#changed"', "rate.limit": '"rate.limit"'}[event.name]
    statement = b"raise dbevent " + ref.encode()
    text = event.literal if event.literal is not None else event.text
    return statement if text is None else statement + b" " + _literal(text)


def raise_all(target: str, events: Sequence[Raised]) -> None:
    """Raise every event, in order, from a pyngres session of its own."""
    session = Session(target)
    session.open()
    try:
        for event in events:
            session.execute(raise_statement(event))
    finally:
        session.close()


def decoded_text(body: dict[str, Any]) -> bytes | None:
    """The event text a message carries, as the bytes Ingres sent."""
    if body.get("text_base64") is not None:
        return base64.b64decode(body["text_base64"])
    text = body["text"]
    return None if text is None else str(text).encode("utf-8")


async def receive(
    queue: aio_pika.abc.AbstractQueue, count: int, within: float = 120.0
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Consume `count` messages (fewer if `within` seconds pass first); acks each one."""
    import asyncio

    messages: list[aio_pika.abc.AbstractIncomingMessage] = []
    try:
        async with asyncio.timeout(within), queue.iterator() as iterator:
            async for message in iterator:
                await message.ack()
                messages.append(message)
                if len(messages) >= count:
                    break
    except TimeoutError:
        pass
    return messages


def body_of(message: aio_pika.abc.AbstractIncomingMessage) -> dict[str, Any]:
    """The message body as JSON."""
    body: dict[str, Any] = json.loads(message.body)
    return body
