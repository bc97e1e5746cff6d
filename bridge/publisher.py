"""Publishes caught DBEvents (and gap markers) to RabbitMQ with publisher confirms.

How it works
------------
`Publisher.run(source)` pulls items (caught events and gap markers, alike) from
an `EventSource` in order and keeps up to `confirm_window` of them unconfirmed
at once (pipelined confirms, not one round trip per event). It reports them
back through `source.confirmed()` strictly in order: item N is reported only
once every item before it is confirmed or dropped, so a spool can forget a
prefix.

Outcomes of one publish (mandatory=True, within `publish_timeout`):

- ack: confirmed. A message the broker RETURNED as unroutable (no queue bound
  for its key) is logged and counted (`events_returned`) and also counts as
  confirmed: RabbitMQ acks it right after basic.return, and publishing it
  again would only bring it back again. The fix is a binding, so alert on
  `events_returned`; holding the pipeline would not help.
- nack or no confirm within `publish_timeout`: published again, same
  message_id (`events_republished`). The publisher first lets every in-flight
  publish settle, waits a growing back-off (`retry_wait_initial` doubling up
  to `retry_wait_max`, reset by the next ack), then PROBES: it sends one
  message at a time until one is acked, then pipelines again. A queue that
  nacks for ever (e.g. x-overflow=reject-publish, full) therefore costs one
  publish per back-off period, never a hot loop, and the window fills up so
  the source stops being read (back-pressure to the spool). A connection that
  died silently (no RST) shows up as timeouts until the AMQP heartbeat
  (negotiated with the broker, 60 s by default) declares it dead; then the
  next case applies.
- connection or channel lost: the connection is dropped, a new one is opened
  with back-off (stamina; `reconnect_wait_*`; counted in
  `reconnects{side="amqp"}`), the exchange declared (or checked) again and
  every unconfirmed message published again, in order.

Events that can never be published are dropped by policy: logged at ERROR,
counted in `events_dropped{reason}` (`routing_key_too_long`: the key would
exceed 255 bytes; `bad_event`: the message cannot be built, e.g. a naive
raise time) and reported confirmed in their turn, so they cannot block the
events behind them for ever.

Ordering: messages are written in the order the source gave them, also after
a reconnect. Duplicates (same message_id) happen only for messages whose
confirm was lost (connection loss, timeout). After a NACK the nacked message
is published again after messages that were already in flight behind it, so
nacks (a broker refusing messages) can reorder; consumers that care use
`raised_at` / message_id.

Connection: one plain aio-pika connection per session rather than
`connect_robust`. Recovery is this module's own loop because it must decide
what to republish and when; a robust connection restores channels in the
background with a fixed interval, which would race with that loop and add a
second, differently configured back-off.

Logging: logger "bridge.publisher". Event-level lines carry
`extra={"message_id", "event_owner", "event_name"}` (`name` itself is a
reserved LogRecord attribute), gap-marker lines `message_id`, `event_database`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from typing import Literal, Protocol, cast
from urllib.parse import unquote

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.abc
import aiormq.exceptions
import stamina
from yarl import URL

from bridge.amqp_batch import Confirmation, publish_batch
from bridge.causes import causes
from bridge.event import CaughtEvent, GapMarker, Item
from bridge.masking import hide, mask_url
from bridge.message import (
    MessageFormat,
    Outgoing,
    check_encoding,
)
from bridge.metrics import Metrics
from bridge.routing import (
    DEFAULT_TEMPLATE,
    MAX_ROUTING_KEY_BYTES,
    RoutingKeyBuilder,
    RoutingKeyTooLong,
    validate_template,
)
from bridge.tls import tls_failure_hint

log = logging.getLogger("bridge.publisher")

# Errors that mean "could not talk to the broker" while opening a session.
_BROKER_ERRORS = (aiormq.exceptions.AMQPError, OSError, TimeoutError)


class PublisherError(Exception):
    """Base class of the publisher's own errors."""


class PublisherStartupError(PublisherError):
    """The broker cannot be reached, refuses us, or the exchange is unusable.

    The message names the (password-masked) URL, the exchange and the vhost;
    it never contains the password. `transient` is True when the broker was
    merely unreachable (refused, reset, timed out): trying again later may work,
    unlike refused credentials, a failed certificate check or a missing exchange.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ExchangeMissingError(PublisherStartupError):
    """The exchange does not exist, and the publisher was told not to declare it."""


# Connect failures that waiting does not cure.
_PERMANENT_CONNECT_ERRORS = (
    aiormq.exceptions.AuthenticationError,
    aiormq.exceptions.ProbableAuthenticationError,
    aiormq.exceptions.ConnectionNotAllowed,
    aiormq.exceptions.IncompatibleProtocolError,
    ssl.SSLError,
)


def _is_transient(exc: BaseException) -> bool:
    """False when `exc`, or a cause it wraps (aiormq wraps ssl errors), is permanent."""
    return not any(isinstance(cause, _PERMANENT_CONNECT_ERRORS) for cause in causes(exc))


class _Connection(aio_pika.Connection):
    """An aio-pika connection that closes itself when connecting fails.

    aio-pika's connect() drops a Connection whose connect() failed (e.g. a reset
    during the handshake) without closing it; its __del__ then schedules close()
    from the garbage collector, possibly outside the loop, which leaves a
    "coroutine was never awaited" warning behind every failed attempt.
    """

    async def connect(self, timeout: aio_pika.abc.TimeoutType = None) -> None:  # noqa: ASYNC109
        """Connect; on any failure, close before re-raising."""
        try:
            await super().connect(timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.close()
            raise


class EventSource(Protocol):
    """Where the publisher takes items from: the backlog (`bridge.backlog.Backlog`).

    An item is a caught event or a gap marker (`bridge.event.Item`); both are
    published in the order get() returns them, and confirmed alike.
    """

    async def get(self) -> Item | None:
        """The next item, in order; None once the source is closed and drained."""
        ...

    def confirmed(self, item: Item) -> None:
        """The broker confirmed `item` (or it was dropped by policy): forget it.

        Called in the order get() returned the items, exactly once per item.
        """
        ...


def vhost_of(url: str) -> str:
    """The virtual host an AMQP URL names (`/` when the path is empty)."""
    raw = URL(url).raw_path[1:]
    return unquote(raw) if raw else "/"


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    """What the publisher needs; AmqpSettings maps onto it field by field.

    Times are in seconds. `url` is the plain URL (pass SecretStr's value); it
    is kept out of repr().
    """

    url: str = field(repr=False)
    exchange: str = "ingres.dbevents"
    exchange_type: str = "topic"
    declare_exchange: bool = True
    routing_key: str = DEFAULT_TEMPLATE
    gap_routing_key: str = "dbevent-bridge.gap"
    confirm_window: int = 256
    publish_timeout: float = 30.0
    text_encoding: str = "utf-8"
    # "json" (the bridge's own body) or "cloudevents" (structured mode), and the
    # CloudEvents source of each database (see bridge.message.MessageFormat).
    message_format: Literal["json", "cloudevents"] = "json"
    cloudevents_sources: Mapping[str, str] = field(default_factory=dict)
    connect_timeout: float = 15.0
    reconnect_wait_initial: float = 0.1
    reconnect_wait_max: float = 10.0
    reconnect_wait_jitter: float = 1.0
    retry_wait_initial: float = 0.1
    retry_wait_max: float = 30.0
    # TLS: an amqps:// URL plus this context (see bridge.tls); None = aio-pika's default.
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Reject unusable values with a message naming the field."""
        validate_template(self.routing_key)
        check_encoding(self.text_encoding)
        if not self.exchange:
            raise ValueError("exchange must not be empty (the default exchange is not supported)")
        if not self.exchange_type:
            raise ValueError("exchange_type must not be empty")
        if len(self.gap_routing_key.encode("utf-8")) > MAX_ROUTING_KEY_BYTES:
            raise ValueError(f"gap_routing_key is longer than {MAX_ROUTING_KEY_BYTES} bytes")
        if self.confirm_window < 1:
            raise ValueError("confirm_window must be at least 1")
        for name in ("publish_timeout", "connect_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("reconnect_wait_initial", "reconnect_wait_max", "reconnect_wait_jitter",
                     "retry_wait_initial", "retry_wait_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def masked_url(self) -> str:
        """The URL with the password masked."""
        return mask_url(self.url)

    @property
    def vhost(self) -> str:
        """The virtual host the URL names."""
        return vhost_of(self.url)


class _State(Enum):
    QUEUED = "queued"  # to be (re)sent
    SENT = "sent"  # written or being written; confirm pending
    ACKED = "acked"
    DROPPED = "dropped"  # by policy (routing key too long): settled, never sent
    NACKED = "nacked"
    TIMED_OUT = "timed out"
    LOST = "lost"  # connection or channel died before the confirm


_SETTLED = frozenset({_State.ACKED, _State.DROPPED})
_FAILED = frozenset({_State.NACKED, _State.TIMED_OUT, _State.LOST})


@dataclass(eq=False, slots=True)
class _Entry:
    """One event or gap marker between get() and its in-order report."""

    item: CaughtEvent | GapMarker
    routing_key: str
    message: Outgoing | None  # None when dropped
    state: _State
    sends: int = 0
    deadline: float = 0.0  # loop time by which the current send must be confirmed
    expired: bool = False  # the current send is past its deadline
    # The current send: the batch write until its frame is queued, then the confirm.
    write: asyncio.Task[list[Confirmation]] | None = None
    confirmation: Confirmation | None = None

    def log_extra(self) -> dict[str, str]:
        """The `extra` of log lines about this entry."""
        if isinstance(self.item, CaughtEvent):
            return {"message_id": self.item.message_id, "event_owner": self.item.owner,
                    "event_name": self.item.name}
        return {"message_id": self.item.message_id, "event_database": self.item.database}


@dataclass(eq=False, slots=True)
class _Session:
    """One connection + confirming channel; `broken` once either is gone."""

    connection: aio_pika.abc.AbstractConnection
    channel: aiormq.Channel  # concrete: publish_batch works on aiormq's channel
    broken: bool = False

    def mark_broken(self, *_: object) -> None:
        """Close callback of the connection and the channel."""
        self.broken = True


def describe_error(config: PublisherConfig, exc: BaseException) -> str:
    """An exception as text, guaranteed free of the password."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return hide(text, URL(config.url).password)


async def open_connection(
    config: PublisherConfig, name: str = "dbevent-bridge publisher"
) -> aio_pika.abc.AbstractConnection:
    """Connect to the broker; PublisherStartupError (`transient` or not) when that fails."""
    try:
        async with asyncio.timeout(config.connect_timeout):
            return await aio_pika.connect(
                config.url, ssl_context=config.ssl_context,
                client_properties={"connection_name": name},
                connection_class=_Connection,
            )
    except _BROKER_ERRORS as exc:
        hint = tls_failure_hint(exc)  # names the setting to fix
        raise PublisherStartupError(
            f"cannot connect to RabbitMQ at {config.masked_url} (vhost {config.vhost!r}): "
            f"{describe_error(config, exc)}" + (f"; {hint}" if hint else ""),
            transient=_is_transient(exc),
        ) from None


class Publisher:
    """Publishes events from an EventSource to one exchange, confirmed and in order.

    Use: `await start()` (connect + declare; PublisherStartupError), then
    `await run(source)`, whose items are caught events and gap markers alike; finally
    `await close()`. One Publisher serves one run() at a time.
    """

    def __init__(
        self, config: PublisherConfig, metrics: Metrics,
        connect: Callable[[], Awaitable[aio_pika.abc.AbstractConnection]] | None = None,
    ) -> None:
        """A publisher that is not connected yet.

        `connect` opens each session's connection (default: `open_connection`).
        An active/standby bridge passes the connection that holds its lease
        (`bridge.ha`), so that it publishes only while RabbitMQ says it is the
        active one; whatever `connect` raises other than PublisherStartupError
        ends `run()`.
        """
        self._config = config
        self._metrics = metrics
        self._connect = connect or functools.partial(open_connection, config)
        self._router = RoutingKeyBuilder(config.routing_key)
        self._format = MessageFormat(
            config.message_format, config.text_encoding, config.cloudevents_sources
        )
        self._session: _Session | None = None
        self._source: EventSource | None = None
        self._pending: deque[_Entry] = deque()  # taken, not yet reported; in order
        self._queued: deque[_Entry] = deque()  # subset of _pending to send; in order
        self._in_flight = 0
        self._failed = 0  # entries nacked / timed out / lost since the last recovery
        self._probing = False
        self._retry_streak = 0
        self._tasks: set[asyncio.Task[list[Confirmation]]] = set()  # batch writes
        # (deadline, entry) of every send, in send order, hence by deadline
        # (one publish_timeout for all); stale once that send has finished.
        self._deadlines: deque[tuple[float, _Entry]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._kick = asyncio.Event()  # something changed: the send loop looks again
        self._space = asyncio.Event()  # the window has room: the feeder looks again
        self._eof = False
        self._closed = False

    @property
    def is_connected(self) -> bool:
        """True while a session is open and healthy (for readiness probes)."""
        session = self._session
        return session is not None and not session.broken and not session.connection.is_closed

    async def start(self) -> None:
        """Connect, open a confirming channel and declare (or check) the exchange.

        Raises PublisherStartupError when the broker cannot be reached, refuses
        the credentials or the vhost, or the exchange is missing (with
        declare_exchange=False) or declared differently.
        """
        if self._closed:
            raise PublisherError("publisher is closed")
        if self._session is None or self._session.broken:
            self._session = await self._open_session()

    async def close(self) -> None:
        """Close the connection. Cancel a running run() first; idempotent."""
        self._closed = True
        await self._cancel_tasks()
        session, self._session = self._session, None
        if session is not None:
            await self._close_session(session)

    async def run(self, source: EventSource) -> None:
        """Publish every item of `source` until get() returns None and all are confirmed.

        The one way in: caught events and gap markers alike, in the source's
        order. Connects first if start() was not called (PublisherStartupError).
        Later connection losses are retried for ever. If run() is cancelled or
        the source raises, unconfirmed items are abandoned (never reported
        confirmed, so the source keeps them) and the exception propagates.
        """
        self._source, self._eof = source, False
        feeder = asyncio.create_task(self._feed(source))
        try:
            if self._session is None:
                await self.start()
            await self._send_loop(feeder)
        except BaseException:
            await self._abandon()
            raise
        finally:
            self._disarm()
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

    async def _feed(self, source: EventSource) -> None:
        """Take items from the source while the window has room."""
        try:
            while True:
                while len(self._pending) >= self._config.confirm_window:
                    self._space.clear()
                    await self._space.wait()
                item = await source.get()
                if item is None:
                    self._eof = True
                    return
                self._append(self._event_entry(item) if isinstance(item, CaughtEvent)
                             else self._gap_entry(item))
        finally:
            self._kick.set()

    def _event_entry(self, event: CaughtEvent) -> _Entry:
        try:
            key = self._router.for_event(event)
        except RoutingKeyTooLong as exc:
            return self._dropped(event, "routing_key_too_long", str(exc))
        try:
            message = self._format.event(event)
        except Exception as exc:  # noqa: BLE001 (a malformed event must not stop the publisher)
            # A malformed event (e.g. a naive raise time) is a bug upstream. Dropping
            # it loudly beats failing run(): the spool would hand the same event
            # over again after every restart, and nothing behind it would ever go.
            return self._dropped(event, "bad_event", repr(exc))
        return _Entry(event, key, message, _State.QUEUED)

    def _gap_entry(self, marker: GapMarker) -> _Entry:
        return _Entry(marker, self._config.gap_routing_key, self._format.gap(marker),
                      _State.QUEUED)

    def _dropped(self, event: CaughtEvent, reason: str, why: str) -> _Entry:
        entry = _Entry(event, "", None, _State.DROPPED)
        log.error("event dropped (%s): %s", reason, why, extra=entry.log_extra())
        self._metrics.events_dropped.labels(reason=reason).inc()
        return entry

    def _append(self, entry: _Entry) -> None:
        self._pending.append(entry)
        if entry.state is _State.QUEUED:
            self._queued.append(entry)
        self._kick.set()

    async def _send_loop(self, feeder: asyncio.Task[None]) -> None:
        while True:
            self._kick.clear()
            self._report_settled()
            if feeder.done():
                feeder.result()  # re-raises the source's error, if any
            if self._eof and not self._pending:
                return
            if self._needs_recovery():
                await self._recover()
                continue
            self._send_queued()
            await self._kick.wait()

    def _needs_recovery(self) -> bool:
        session = self._session
        return session is None or session.broken or self._failed > 0

    def _send_queued(self) -> None:
        """Send every queued entry in one batch (one entry while probing)."""
        session = self._session
        assert session is not None
        if not self._queued or (self._probing and self._in_flight):
            return  # probing: one message at a time until the broker acks again
        count = 1 if self._probing else len(self._queued)
        batch = [self._queued.popleft() for _ in range(count)]
        self._send(batch, session)

    def _report_settled(self) -> None:
        """Report the settled prefix of _pending to the source, in order."""
        reported = False
        while self._pending and self._pending[0].state in _SETTLED:
            entry = self._pending.popleft()
            assert self._source is not None
            self._source.confirmed(entry.item)
            reported = True
        if reported:
            self._space.set()

    # -- one batch of publishes --------------------------------------------------------

    def _send(self, batch: list[_Entry], session: _Session) -> None:
        # One write task per batch; each message's outcome arrives through its
        # confirmation future (_on_confirm), never through a task of its own.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.publish_timeout
        messages = []
        for entry in batch:
            assert entry.message is not None
            entry.state = _State.SENT
            if entry.sends:
                self._metrics.events_republished.inc()
            entry.sends += 1
            entry.deadline, entry.expired = deadline, False
            messages.append((entry.routing_key, entry.message.body, entry.message.properties))
            self._deadlines.append((deadline, entry))
        self._metrics.events_published.inc(len(batch))
        self._in_flight += len(batch)
        write = loop.create_task(publish_batch(session.channel, self._config.exchange, messages))
        for entry in batch:
            entry.write = write
        self._tasks.add(write)
        write.add_done_callback(self._tasks.discard)
        write.add_done_callback(partial(self._written, batch, session))
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._on_deadline)

    def _written(self, batch: list[_Entry], session: _Session,
                 write: asyncio.Task[list[Confirmation]]) -> None:
        """The batch's frame is queued for the writer (or the write failed)."""
        if write.cancelled() or write.exception() is not None:
            # Cancelled by the watchdog (the channel did not take the frame
            # within publish_timeout), by recovery (the session is gone) or by
            # close(): either way nothing of this batch was published.
            if not write.cancelled():
                session.broken = True
                log.debug("publish failed: %r", write.exception())
            for entry in batch:
                if entry.write is write:
                    entry.write = None
                    self._settle_failed(entry, _State.TIMED_OUT if entry.expired else _State.LOST)
            return
        for entry, confirmation in zip(batch, write.result(), strict=True):
            if entry.write is not write:
                confirmation.cancel()  # abandoned meanwhile
                continue
            entry.write, entry.confirmation = None, confirmation
            confirmation.add_done_callback(partial(self._on_confirm, entry, session))
            if entry.expired:
                confirmation.cancel()  # the watchdog fired before we got here

    def _on_confirm(self, entry: _Entry, session: _Session, confirmation: Confirmation) -> None:
        if entry.confirmation is not confirmation:
            return  # abandoned meanwhile
        entry.confirmation = None
        if confirmation.cancelled() and entry.expired:
            self._settle_failed(entry, _State.TIMED_OUT)  # by the watchdog
            return
        error = None if confirmation.cancelled() else confirmation.exception()
        if isinstance(error, aiormq.exceptions.DeliveryError):
            self._settle_failed(entry, _State.NACKED)
        elif error is not None or confirmation.cancelled():
            # The channel failed or cancelled the confirm: it is gone.
            session.broken = True
            log.debug("publish failed: %r", error, extra=entry.log_extra())
            self._settle_failed(entry, _State.LOST)
        else:
            if isinstance(confirmation.result(), aiormq.abc.DeliveredMessage):
                self._returned(entry)
            self._acked(entry)
            self._settled()

    def _settle_failed(self, entry: _Entry, state: _State) -> None:
        self._failed_with(entry, state)
        self._settled()

    def _settled(self) -> None:
        self._in_flight -= 1
        self._drop_stale_deadlines()
        self._kick.set()

    # -- the watchdog: one timer for the oldest unconfirmed send -----------------------

    def _drop_stale_deadlines(self) -> None:
        deadlines = self._deadlines
        while deadlines and not _is_current(*deadlines[0]):
            deadlines.popleft()

    def _on_deadline(self) -> None:
        """Time out every send past its deadline, then wait for the next oldest.

        Equivalent to one `asyncio.timeout(publish_timeout)` per send (sends
        share one timeout, so their deadlines come in send order) at the cost
        of one timer for the whole window instead of one per message. A send
        times out by cancelling what it waits for: its batch's write while the
        channel has not taken the frame, else its confirmation.
        """
        self._watchdog = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines:
            deadline, entry = deadlines[0]
            if _is_current(deadline, entry):
                if deadline > now:
                    self._watchdog = loop.call_at(deadline, self._on_deadline)
                    return
                entry.expired = True
                if entry.confirmation is not None:
                    entry.confirmation.cancel()
                elif entry.write is not None:
                    entry.write.cancel()
            deadlines.popleft()

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._deadlines.clear()

    def _failed_with(self, entry: _Entry, state: _State) -> None:
        entry.state = state
        self._failed += 1
        # Per message at INFO: the back-off or reconnect line sums each incident up.
        level = logging.DEBUG if state is _State.LOST else logging.INFO
        log.log(level, "publish %s; it will be published again", state.value,
                extra=entry.log_extra())

    def _returned(self, entry: _Entry) -> None:
        self._metrics.events_returned.inc()
        log.warning("message returned as unroutable (no queue bound for routing key %r)",
                    entry.routing_key, extra=entry.log_extra())

    def _acked(self, entry: _Entry) -> None:
        entry.state = _State.ACKED
        self._retry_streak = 0
        self._probing = False
        item = entry.item
        if isinstance(item, CaughtEvent):
            self._metrics.events_confirmed.inc()
            latency = (datetime.now(UTC) - item.raised_at).total_seconds()
            self._metrics.raise_to_confirm.observe(max(latency, 0.0))
        else:  # a gap marker: counted once confirmed, wherever it was put
            self._metrics.gap_markers.labels(database=item.database).inc()

    # -- recovery ----------------------------------------------------------------------

    async def _recover(self) -> None:
        """Let in-flight publishes settle, reconnect or back off, then requeue failures."""
        session = self._session
        if session is not None and session.broken:
            await self._close_session(session)  # fails its pending confirms at once
            for task in self._tasks:
                task.cancel()  # writes stuck behind a dead socket: nothing was sent
        while self._in_flight:
            self._kick.clear()
            if self._in_flight:
                await self._kick.wait()
        if self._closed:
            raise PublisherError("publisher closed while publishing")
        if self._session is None or self._session.broken:
            await self._reconnect()
        elif self._failed:
            await self._back_off()
        self._requeue()

    async def _back_off(self) -> None:
        cfg = self._config
        delay = min(cfg.retry_wait_max, cfg.retry_wait_initial * 2**self._retry_streak)
        delay *= random.uniform(0.8, 1.0)  # de-synchronise several bridges  # noqa: S311 (jitter, not cryptography)
        self._retry_streak += 1
        self._probing = True
        log.warning("broker refused or did not confirm %d message(s); publishing again in "
                    "%.2fs, one at a time until it acks", self._failed, delay)
        await asyncio.sleep(delay)

    def _requeue(self) -> None:
        for entry in self._pending:
            if entry.state in _FAILED:
                entry.state = _State.QUEUED
        self._queued = deque(e for e in self._pending if e.state is _State.QUEUED)
        self._failed = 0

    async def _reconnect(self) -> None:
        cfg = self._config
        old, self._session = self._session, None
        if old is not None:
            await self._close_session(old)
        log.warning("connection to RabbitMQ lost; reconnecting to %s", cfg.masked_url)
        async for attempt in stamina.retry_context(
            on=PublisherStartupError, attempts=None, timeout=None,
            wait_initial=cfg.reconnect_wait_initial, wait_max=cfg.reconnect_wait_max,
            wait_jitter=cfg.reconnect_wait_jitter,
        ):
            with attempt:
                try:
                    self._session = await self._open_session()
                except PublisherStartupError as exc:
                    log.warning("reconnect failed: %s", exc)
                    raise
        self._metrics.reconnects.labels(side="amqp").inc()
        log.info("reconnected to %s; publishing %d unconfirmed message(s) again",
                 cfg.masked_url, sum(e.state in _FAILED for e in self._pending))

    # -- sessions ----------------------------------------------------------------------

    async def _open_session(self) -> _Session:
        cfg = self._config
        connection = await self._connect()
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                channel = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=False)
                await self._declare(channel)
                underlay = await channel.get_underlay_channel()
        except BaseException:
            await self._close_connection(connection)
            raise
        session = _Session(connection, cast(aiormq.Channel, underlay))
        connection.close_callbacks.add(session.mark_broken)
        channel.close_callbacks.add(session.mark_broken)
        return session

    async def _declare(self, channel: aio_pika.abc.AbstractChannel) -> None:
        cfg = self._config
        where = f"exchange {cfg.exchange!r} in vhost {cfg.vhost!r} at {cfg.masked_url}"
        try:
            if cfg.declare_exchange:
                await channel.declare_exchange(cfg.exchange, cfg.exchange_type, durable=True)
            else:
                await channel.get_exchange(cfg.exchange, ensure=True)  # passive declare
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise ExchangeMissingError(
                f"{where} does not exist; with declare_exchange=false it must be declared "
                "beforehand"
            ) from None
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise PublisherStartupError(
                f"{where} exists with other settings than durable {cfg.exchange_type!r}: {exc}"
            ) from None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise PublisherStartupError(f"{where}: access refused: {exc}") from None
        except _BROKER_ERRORS as exc:
            raise PublisherStartupError(
                f"cannot declare {where}: {self._describe(exc)}"
            ) from None

    def _describe(self, exc: BaseException) -> str:
        return describe_error(self._config, exc)

    async def _close_session(self, session: _Session) -> None:
        session.broken = True
        await self._close_connection(session.connection)

    @staticmethod
    async def _close_connection(connection: aio_pika.abc.AbstractConnection) -> None:
        # A dead peer must not hang us; errors closing a broken connection are moot.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await connection.close()

    # -- aborting ----------------------------------------------------------------------

    async def _cancel_tasks(self) -> None:
        self._disarm()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _abandon(self) -> None:
        """Forget everything unconfirmed after run() failed (the source keeps it)."""
        await self._cancel_tasks()
        for entry in self._pending:
            # Detached: their late write or confirm callbacks change nothing.
            entry.write = None
            confirmation, entry.confirmation = entry.confirmation, None
            if confirmation is not None:
                confirmation.cancel()
        self._pending.clear()
        self._queued.clear()
        self._in_flight = 0
        self._failed = 0
        self._probing = False


def _is_current(deadline: float, entry: _Entry) -> bool:
    """True while `entry`'s send with this deadline awaits its write or confirm."""
    return entry.state is _State.SENT and entry.deadline == deadline
