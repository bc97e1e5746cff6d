"""`dbevent-bridge demo`: the whole bridge on the built-in simulator and a local RabbitMQ.

It starts the DBMS simulator, creates a few sample DBEvents, runs the bridge,
binds a temporary queue to the exchange (as a downstream service would), raises
the sample events from a second Ingres session, and prints what the
subscriber receives.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import aio_pika

from bridge.app import Bridge
from bridge.openapi import OpenAPIUnavailableError, check_ii_system
from bridge.settings import IngresTarget, Settings
from bridge.sim.build import BuildError, ensure_ii_system

# (statement, what it shows)
_SAMPLE_EVENTS = ("order_created", "stock_low", "price#changed")
_RAISES = (
    ("raise dbevent order_created 'order 1001: 3 x widget'", "event text"),
    ("raise dbevent order_created", "no text"),
    ("raise dbevent ingres.stock_low 'sku=W-17 qty=2'", "owner-qualified name"),
    ("raise dbevent \"price#changed\" 'prix: 12,50 €'", "name that needs percent-encoding"),
)
_RECEIVE_TIMEOUT_S = 15.0


def _no_broker_help(url: str, error: BaseException) -> str:
    return (
        f"No RabbitMQ answers at {url} ({error}).\n"
        "Start one, then run the demo again:\n"
        "  - Debian/Ubuntu: apt-get install rabbitmq-server && rabbitmq-server -detached\n"
        "  - Docker: docker run -d --name rabbitmq -p 5672:5672 rabbitmq:3-management\n"
        "or point the demo at yours: BRIDGE_AMQP__URL=amqp://user:password@host:5672/"
    )


async def run_demo(settings: Settings) -> int:
    """Run the demo; return the exit status (0 when every sample event arrived)."""
    # The library comes first: pyngres loads it on first import, and nothing
    # is open yet if it cannot be had.
    try:
        os.environ["II_SYSTEM"] = str(_simulator_ii_system())
    except BuildError as exc:
        print(f"cannot build the OpenAPI simulator: {exc}")
        return 1
    url = str(settings.amqp.url.get_secret_value())
    try:
        connection = await aio_pika.connect(url, timeout=10)
    except Exception as exc:  # noqa: BLE001 (any failure to reach the broker is explained the same way)
        print(_no_broker_help(settings.amqp.url_masked, exc))
        return 1
    from bridge.sim.server import ServerThread

    # Closed on every way out, the errors of the steps below included.
    async with connection:
        with ServerThread() as server, tempfile.TemporaryDirectory() as spool_dir:
            target = server.target("ingres", "demo", "demodb")
            await asyncio.to_thread(_create_events, target)
            demo_settings = _demo_settings(settings, target, Path(spool_dir))
            return await _run_with_subscriber(demo_settings, connection, target)


def _simulator_ii_system() -> Path:
    """$II_SYSTEM when it already holds an OpenAPI library, else the simulator's, built now.

    An image ships the library prebuilt and has no compiler to build it with.
    """
    try:
        return check_ii_system().parents[2]  # <II_SYSTEM>/ingres/lib/libiiapi.1.so
    except OpenAPIUnavailableError:
        return ensure_ii_system()


def _create_events(target: str) -> None:
    from bridge.openapi import Session

    session = Session(target)
    session.open()
    try:
        for name in _SAMPLE_EVENTS:
            session.execute(f'create dbevent "{name}"')
    finally:
        session.close()


def _raise_events(target: str) -> None:
    from bridge.openapi import Session

    session = Session(target)
    session.open()
    try:
        for statement, what in _RAISES:
            print(f"  RAISE  {statement:<58} -- {what}")
            session.execute(statement)
    finally:
        session.close()


def _demo_settings(settings: Settings, target: str, spool_dir: Path) -> Settings:
    ingres = settings.ingres.model_copy(
        update={
            "target": IngresTarget(target),
            "user": None,
            "password": None,
            "events": ["order_created", "ingres.stock_low", '"price#changed"'],
        }
    )
    spool = settings.spool.model_copy(update={"path": spool_dir / "spool.sqlite3"})
    http = settings.http.model_copy(update={"listen": None})
    return settings.model_copy(update={"ingres": ingres, "spool": spool, "http": http})


async def _run_with_subscriber(
    settings: Settings, connection: aio_pika.abc.AbstractConnection, target: str
) -> int:
    bridge = Bridge(settings)
    await bridge.start()
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(settings.amqp.exchange, routing_key="#")
        print(f"subscriber: queue {queue.name} bound to exchange "
              f"{settings.amqp.exchange!r} with routing key '#'")
        await asyncio.to_thread(_wait_registered, bridge)
        await asyncio.to_thread(_raise_events, target)
        received = await _receive(queue, len(_RAISES))
    finally:
        await bridge.shutdown()
    print(f"\n{received} of {len(_RAISES)} events received.")
    return 0 if received == len(_RAISES) else 1


def _wait_registered(bridge: Bridge) -> None:
    if not bridge.wait_registered(timeout=30.0):
        raise RuntimeError("the bridge did not register its events within 30 s")


async def _receive(queue: aio_pika.abc.AbstractQueue, expected: int) -> int:
    received = 0
    try:
        async with asyncio.timeout(_RECEIVE_TIMEOUT_S), queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    received += 1
                    _print_message(message)
                if received == expected:
                    break
    except TimeoutError:
        print(f"(timed out after {_RECEIVE_TIMEOUT_S:.0f} s)")
    return received


def _print_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    body = json.loads(message.body)
    print(f"\n  RECEIVED routing key {message.routing_key!r}  type={message.type}  "
          f"message_id={message.message_id}")
    print(f"    headers: {dict(message.headers)}")
    print(f"    body:    {json.dumps(body, ensure_ascii=False)}")
