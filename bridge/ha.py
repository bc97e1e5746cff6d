"""Active/standby pairs: two bridges catch the same DBEvents, RabbitMQ decides which publishes.

Ingres keeps no DBEvents: every second in which no bridge is registered is
lost for good. Two bridges of one group (`ha.group`) therefore both register
and catch, each into its own spool; only one of them publishes.

The lease: a single-active-consumer queue, `dbevent-bridge.ha.<group>.lease`,
holding a token message. Every bridge consumes it on the connection it
publishes on (prefetch 1, never acking) and puts a token in when it connects
(the queue keeps at most one waiting). RabbitMQ delivers only to the active
consumer, which keeps its token unacknowledged: receiving the token is being
granted the lease. When that connection ends (a clean stop, a crash or a
SIGKILL: the kernel closes the socket; a network cut: the broker's heartbeat)
RabbitMQ requeues the token and makes the next consumer active, which receives
it at once. No polling, no consensus of our own: RabbitMQ decides. Since the
lease and the publishes share one connection, a bridge that lost its
connection has lost its lease with it and cannot publish any more; when it
reconnects, it queues up behind the new active consumer and stands by.

Progress: the active bridge sends the ids of the events the broker confirmed
(`_PROGRESS_EVERY_S`) to the direct exchange `dbevent-bridge.ha`, routing key
the group. A standby keeps every event it caught (`HaSource`) until such a
report names its id (event ids are derived from the event, so both bridges
compute the same one), and then forgets it. On takeover it publishes first
what it still holds: what the old active had not confirmed, or had confirmed
without its report arriving (published twice then, under the same id).

Gap markers: a standby's own (its session lost, or its restart) reach it
through the backlog like its events, and it holds them likewise. No report
names them (the active reports its own gaps); on takeover, a marker whose
window ended before the last progress report of the old active is forgotten,
since that report shows the active was alive and publishing after the window;
the others are published with what is held.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Final

import aio_pika
import aio_pika.abc
import aiormq.abc
import aiormq.exceptions
import stamina

from bridge.backlog import Backlog
from bridge.event import CaughtEvent, GapMarker, Item
from bridge.metrics import Metrics
from bridge.publisher import (
    CONNECT_TIMEOUT,
    Publisher,
    PublisherError,
    PublisherStartupError,
    close_connection,
    describe_error,
    open_connection,
)
from bridge.settings import AmqpSettings
from bridge.tls import ssl_context_for

log = logging.getLogger("bridge.ha")

PROGRESS_EXCHANGE: Final = "dbevent-bridge.ha"
_INSTANCE_HEADER: Final = "x-dbevent-bridge-instance"
# How long a new connection waits for the token before it says it stands by.
_STANDBY_AFTER_S: Final = 1.0
_LEASE_ARGUMENTS: Final[aiormq.abc.FieldTable] = {
    "x-single-active-consumer": True,
    # One waiting token is enough; the active's own is unacknowledged, not waiting.
    "x-max-length": 1,
    "x-overflow": "drop-head",
}
# How often the active reports the ids the broker confirmed: the standby holds
# about this much more than it must.
_PROGRESS_EVERY_S: Final = 0.1
# How long a standby remembers ids the active confirmed before it caught them
# itself (its catch can lag the active's confirm).
_SETTLED_MEMORY_S: Final = 60.0
# How long the broker keeps a disconnected bridge's reports for it.
_REPORTS_KEPT_S: Final = 60.0
# Longest silence between two progress reports of an active bridge.
_ALIVE_REPORT_S: Final = 1.0
_RECONNECT_MAX_S: Final = 5.0


class LeaseLostError(PublisherError):
    """The bridge does not hold its group's lease (any more): it must not publish."""


def lease_queue(group: str) -> str:
    """The single-active-consumer queue whose active consumer is the active bridge of `group`."""
    return f"dbevent-bridge.ha.{group}.lease"


class HaSource:
    """The publisher's event source in active/standby mode, wrapping the backlog.

    Active: hands out first what it held as a standby (`become_active`), then
    the backlog's items; reports each confirmed event's id for the standby.
    Standby: takes every item from the backlog (`_pull`) and holds an event
    until the active's progress names it (`settle`), a gap marker until a
    takeover decides (`become_active`); at most `held_max` in memory (the
    rest waits in the backlog, i.e. the spool). The backlog is told
    `confirmed` exactly once per item, by whichever comes first.
    """

    def __init__(self, backlog: Backlog, metrics: Metrics, held_max: int) -> None:
        self._backlog = backlog
        self._metrics = metrics
        self._held_max = held_max
        self._held: dict[str, Item] = {}  # taken, not confirmed; in catch order
        # The gap markers among them, with this host's time (time.time()) when
        # this standby took each, to compare with progress reports' times
        # (None: taken as the active, never covered by a report).
        self._held_gaps: dict[str, float | None] = {}
        self._replay: deque[Item] = deque()
        self._settled: dict[str, float] = {}  # confirmed by the active, not caught yet
        self._progress: list[str] = []
        self._active = False
        self._room = asyncio.Event()
        self._puller: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """True while this bridge publishes."""
        return self._active

    # -- the publisher's side (active) -------------------------------------------------

    async def get(self) -> Item | None:
        """What the standby held first, in catch order; then the backlog's items."""
        if self._replay:
            return self._replay.popleft()
        item = await self._backlog.get()
        if item is not None:
            self._hold(item, None)
        return item

    def confirmed(self, item: Item) -> None:
        """The broker confirmed `item`: forget it, and report an event to the standby."""
        if self._release(item):
            self._backlog.confirmed(item)
            if isinstance(item, CaughtEvent):
                self._progress.append(item.message_id)
        self._gauge()

    def take_progress(self) -> list[str]:
        """The ids confirmed since the last call (the active's report)."""
        ids, self._progress = self._progress, []
        return ids

    # -- roles --------------------------------------------------------------------------

    def become_active(self, reported_at: float | None) -> None:
        """Publish from now on: first everything held, in the order it was caught.

        `reported_at` is this host's time (time.time()) of the old active's last
        progress report (None: none came). A held gap marker taken before it
        was covered by that bridge, which was alive and publishing after the
        window ended: it is forgotten, not published.
        """
        self._active = True
        self._stop_pulling()
        if reported_at is not None:
            self._forget_covered_gaps(reported_at)
        self._replay = deque(self._held.values())
        self._settled.clear()
        self._gauge()
        if self._replay:
            log.info("taking over: publishing %d item(s) the previous active bridge had not "
                     "reported as published", len(self._replay))

    def _forget_covered_gaps(self, reported_at: float) -> None:
        """Forget the held gap markers taken before the old active's last report."""
        for message_id, taken_at in list(self._held_gaps.items()):
            if taken_at is not None and taken_at <= reported_at:
                marker = self._held[message_id]
                assert isinstance(marker, GapMarker)
                log.info("gap from %s to %s was covered by the previous active bridge",
                         marker.lost_from.isoformat(), marker.lost_until.isoformat())
                self._release(marker)
                self._backlog.confirmed(marker)

    def become_standby(self) -> None:
        """Stop publishing: hold what is caught until the active reports it published."""
        self._active = False
        self._replay.clear()
        self._progress.clear()
        self._gauge()
        if self._puller is None or self._puller.done():
            self._puller = asyncio.create_task(self._pull(), name="ha standby")

    def settle(self, ids: Iterable[str]) -> None:
        """The active bridge reports these ids confirmed: a standby forgets them."""
        if self._active:
            return  # a late report of the old active: what we publish wins
        now = time.monotonic()
        for message_id in ids:
            if message_id in self._held_gaps:
                continue  # only a takeover decides about a marker (become_active)
            event = self._held.pop(message_id, None)
            if event is not None:
                self._backlog.confirmed(event)
            else:
                self._settled[message_id] = now
        horizon = now - _SETTLED_MEMORY_S
        for message_id, when in list(self._settled.items()):
            if when >= horizon:
                break
            del self._settled[message_id]
        self._room.set()
        self._gauge()

    def close(self) -> None:
        """Stop taking events (shutdown); what is held stays in the spool."""
        self._stop_pulling()

    def _stop_pulling(self) -> None:
        if self._puller is not None:
            self._puller.cancel()  # only ever waiting: nothing is half taken
            self._puller = None

    async def _pull(self) -> None:
        while True:
            while len(self._held) >= self._held_max:
                self._room.clear()
                await self._room.wait()
            item = await self._backlog.get()
            if item is None:
                return
            if self._settled.pop(item.message_id, None) is not None:
                self._backlog.confirmed(item)  # the active published it already
            else:
                self._hold(item, time.time())
            self._gauge()

    def _hold(self, item: Item, taken_at: float | None) -> None:
        self._held[item.message_id] = item
        if isinstance(item, GapMarker):
            self._held_gaps[item.message_id] = taken_at

    def _release(self, item: Item) -> bool:
        """Stop holding `item`; False if it was not held."""
        self._held_gaps.pop(item.message_id, None)
        return self._held.pop(item.message_id, None) is not None

    def _gauge(self) -> None:
        held_events = len(self._held) - len(self._held_gaps)
        self._metrics.ha_held.set(0 if self._active else held_events)


@dataclass(frozen=True, slots=True)
class _Link:
    """A lease's connection, with the progress exchange it follows the reports on.

    It exists only while the connection is up: from `Lease.start()` (or a
    reconnect) until `Lease.run()` finds the connection gone.
    """

    connection: aio_pika.abc.AbstractConnection
    exchange: aio_pika.abc.AbstractExchange


class Lease:
    """The bridge's claim to publish for its group, and the connection that holds it.

    `run()` keeps a connection to the broker, consumes the active's progress
    reports, and takes the lease when it is free; `active` is set while it is
    held. The publisher gets its connection from `connection()`, which
    refuses (LeaseLostError) unless the lease is held on it.
    """

    def __init__(
        self, amqp: AmqpSettings, group: str, source: HaSource,
        on_change: Callable[[bool], None],
    ) -> None:
        """A lease not yet held; TlsConfigError if amqp.tls is unusable."""
        self._amqp = amqp
        self._ssl_context = ssl_context_for(amqp)
        self.group = group
        self._source = source
        self._on_change = on_change
        self._instance = uuid.uuid4().hex
        self._link: _Link | None = None  # while connected (see _Link)
        self.active = asyncio.Event()
        self._reported = 0.0  # time.monotonic() of the last progress report sent
        # time.time() of the last progress report from another bridge (None: never).
        self.last_progress_at: float | None = None

    async def start(self) -> None:
        """Open the first connection and follow the reports on it (PublisherStartupError).

        The bridge starts catching only after this. A report sent before this
        bridge's report queue was bound never reaches it, and the events it
        names would stay held here until a takeover published them again.
        """
        connection = await self._connect()
        try:
            # Bounded: catching must not wait long for a broker that stalls.
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self._link = await self._follow_reports(connection)
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            await close_connection(connection)
            raise PublisherStartupError(
                f"cannot follow the progress reports of HA group {self.group!r}: "
                f"{describe_error(self._amqp, exc)}",
                transient=not isinstance(exc, aiormq.exceptions.ChannelAccessRefused),
            ) from exc

    @property
    def connected(self) -> bool:
        """True while a connection is up and follows the progress reports."""
        return self._link is not None

    async def connection(self) -> aio_pika.abc.AbstractConnection:
        """The publisher's connection: the one holding the lease, else LeaseLostError."""
        link = self._link
        if link is None or link.connection.is_closed:
            self._lost()
        if not self.active.is_set() or link is None:
            raise LeaseLostError(f"this bridge does not hold the lease of group {self.group!r}")
        return link.connection

    async def run(self) -> None:
        """Hold a connection and take the lease whenever it is free; never returns.

        The first connection is the one start() opened, if it did.
        """
        while True:
            try:
                await self._hold(self._link or await self._relink())
            except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
                log.warning("HA group %s: connection to RabbitMQ lost: %s", self.group,
                            describe_error(self._amqp, exc), extra={"ha_role": "standby"})
            # A connection the broker takes and then ends at once (a lease queue
            # declared with other arguments, say) must not become a hot loop.
            await asyncio.sleep(self._amqp.reconnect_backoff_min)

    async def _reconnect(self) -> aio_pika.abc.AbstractConnection:
        """A new connection, tried with back-off (stamina) until the broker takes one.

        From amqp.reconnect_backoff_min doubling up to _RECONNECT_MAX_S, not
        the publisher's longer maximum: a bridge must queue up for its lease
        soon after the broker is back. No jitter: one connection per bridge.
        """
        async for attempt in stamina.retry_context(
            on=PublisherStartupError, attempts=None, timeout=None,
            wait_initial=self._amqp.reconnect_backoff_min, wait_max=_RECONNECT_MAX_S,
            wait_jitter=0,
        ):
            with attempt:
                try:
                    return await self._connect()
                except PublisherStartupError as exc:
                    log.warning("HA group %s: cannot connect to RabbitMQ, retrying in %.1f s: %s",
                                self.group, attempt.next_wait, exc, extra={"ha_role": "standby"})
                    raise
        raise AssertionError("unreachable: stamina retries until it works or raises")

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        return await open_connection(self._amqp, self._ssl_context, "dbevent-bridge ha")

    async def _relink(self) -> _Link:
        """A new connection (retried, see _reconnect) that follows the progress reports."""
        connection = await self._reconnect()
        try:
            return await self._follow_reports(connection)
        except BaseException:
            await close_connection(connection)
            raise

    async def flush_progress(self) -> None:
        """Report what was confirmed now (before a clean stop hands over)."""
        if self.active.is_set():
            await self._report()

    async def _hold(self, link: _Link) -> None:
        closed = asyncio.Event()
        link.connection.close_callbacks.add(lambda *_: closed.set())
        self._link = link
        try:
            if not await self._granted(link.connection, closed):
                return
            self._won()
            while not await _wait(closed, _PROGRESS_EVERY_S):
                await self._report()
        finally:
            self._link = None
            self._lost()
            await close_connection(link.connection)

    async def _follow_reports(self, connection: aio_pika.abc.AbstractConnection) -> _Link:
        """Consume the other bridges' progress reports on `connection`."""
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            PROGRESS_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        # Named per process and kept by the broker for _REPORTS_KEPT_S after
        # this connection ends: a short disconnect misses no report (which
        # would make the next takeover publish those events again).
        reports = await channel.declare_queue(
            f"{lease_queue(self.group)}.reports.{self._instance}",
            arguments={"x-expires": int(_REPORTS_KEPT_S * 1000)},
        )
        await reports.bind(exchange, routing_key=self.group)
        await reports.consume(self._on_report, no_ack=True)
        return _Link(connection, exchange)

    async def _granted(
        self, connection: aio_pika.abc.AbstractConnection, closed: asyncio.Event
    ) -> bool:
        """Queue up for the lease on `connection`; True once granted, False if it closed."""
        channel = await connection.channel()
        channel.close_callbacks.add(lambda *_: closed.set())  # the lease goes with it
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(
            lease_queue(self.group), auto_delete=True, arguments=_LEASE_ARGUMENTS
        )
        granted = asyncio.Event()

        async def on_token(_: aio_pika.abc.AbstractIncomingMessage) -> None:
            granted.set()  # never acknowledged: held until this connection ends

        await queue.consume(on_token, no_ack=False)
        await channel.default_exchange.publish(aio_pika.Message(b"lease"), routing_key=queue.name)
        if not await _first_of(granted, closed, _STANDBY_AFTER_S):
            log.warning("HA group %s: standing by; another bridge is the active consumer of %s",
                        self.group, lease_queue(self.group), extra={"ha_role": "standby"})
            await _first_of(granted, closed, None)
        return granted.is_set() and not closed.is_set()

    async def _report(self) -> None:
        ids = self._source.take_progress()
        link = self._link
        now = time.monotonic()
        # An empty report now and then says "alive and publishing" to the standby,
        # which decides by it whether its own gaps were covered (HaSource).
        if link is None or (not ids and now - self._reported < _ALIVE_REPORT_S):
            return
        self._reported = now
        message = aio_pika.Message(json.dumps({"ids": ids}).encode(),
                                   headers={_INSTANCE_HEADER: self._instance})
        await link.exchange.publish(message, routing_key=self.group)

    async def _on_report(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if (message.headers or {}).get(_INSTANCE_HEADER) == self._instance:
            return
        try:
            ids = json.loads(message.body)["ids"]
        except (ValueError, KeyError, TypeError):
            log.warning("HA group %s: ignoring a progress report that is not ours", self.group)
            return
        self.last_progress_at = time.time()
        self._source.settle(str(i) for i in ids)

    def _won(self) -> None:
        if not self.active.is_set():
            self.active.set()
            log.warning("HA group %s: this bridge is now ACTIVE (it holds the lease %s)",
                        self.group, lease_queue(self.group), extra={"ha_role": "active"})
            self._on_change(True)

    def _lost(self) -> None:
        if self.active.is_set():
            self.active.clear()
            log.warning("HA group %s: lease lost with the broker connection; this bridge "
                        "publishes nothing until it holds the lease again", self.group,
                        extra={"ha_role": "standby"})
            self._on_change(False)


async def _first_of(one: asyncio.Event, other: asyncio.Event, seconds: float | None) -> bool:
    """Wait until either event is set (or `seconds` pass); True when `one` is set."""
    waiters = {asyncio.ensure_future(one.wait()), asyncio.ensure_future(other.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return one.is_set()


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`; True when it is set."""
    with suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


class Pair:
    """One bridge's side of an active/standby pair: its lease, what it holds, its role.

    `publisher` publishes only on the lease's connection; `run()` is the
    publishing task: stand by until the lease is held, publish (what was held
    first) until it is lost, stand by again.
    """

    def __init__(
        self, *, amqp: AmqpSettings, group: str, backlog: Backlog, metrics: Metrics,
        held_max: int, on_change: Callable[[bool], None],
        cloudevents_sources: Mapping[str, str] | None = None,
    ) -> None:
        self.source = HaSource(backlog, metrics, held_max)
        self.lease = Lease(amqp, group, self.source, on_change)
        self.publisher = Publisher(amqp, metrics, cloudevents_sources=cloudevents_sources,
                                   connect=self.lease.connection)
        self._closing = False

    @property
    def active(self) -> bool:
        """True while this bridge holds the lease."""
        return self.lease.active.is_set()

    async def run(self) -> None:
        """Publish whenever this bridge is the active one; return once the backlog is done."""
        self.source.become_standby()
        while not self._closing:
            await self.lease.active.wait()
            self.source.become_active(self.lease.last_progress_at)
            try:
                await self.publisher.run(self.source)
            except LeaseLostError as exc:
                log.warning("stopped publishing: %s", exc, extra={"ha_role": "standby"})
            else:
                return  # the backlog is closed and everything is confirmed
            self.source.become_standby()

    def close(self) -> None:
        """Shutdown: a standby stops holding; an active one drains (the caller waits)."""
        self._closing = True
        if not self.active:
            self.source.close()
