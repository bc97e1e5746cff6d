"""Publishes a source's items (caught DBEvents and gap markers) to RabbitMQ: the recovery layer.

How the layers fit
------------------
As aio-pika puts its robust connection over a plain one, the publisher is a
plain core with a recovery layer on top:

- `bridge.confirms`, the core: given one open confirming channel, a
  `ConfirmWindow` publishes entries in order, batched (`bridge.amqp_batch`),
  gives each send `publish_timeout` to be confirmed and hands back the
  settled prefix in order. A nack, a timeout or a lost channel is an outcome
  it records, never something it acts on.
- this module, the recovery layer: `Publisher` opens sessions (connection,
  confirming channel, exchange), feeds the window from its source and acts on
  the outcomes. It is the only place that reconnects, backs off or decides
  what to publish again. Inside, `_Sessions` holds the one session and
  reopens it with back-off, and `_Run` is one `run(source)`: the feeder, the
  in-order reports, and what each outcome leads to (below).

`Publisher.run(source)` takes items from an `ItemSource` in order (events and
gap markers alike: one way in) and keeps up to `confirm_window` of them
unreported at once (pipelined confirms, not one round trip per item). It
reports them back through `source.confirmed()` strictly in order: item N is
reported only once every item before it is confirmed or dropped, so a spool
can forget a prefix.

What an outcome leads to:

- ack (returned as unroutable included, see `bridge.confirms`): reported in its turn.
- nack or no confirm within `publish_timeout`: published again, same
  message_id (`events_republished`). The publisher first lets every in-flight
  publish settle, waits a growing back-off (stamina: `RETRY_WAIT_INITIAL`
  doubling up to `RETRY_WAIT_MAX`, with up to `RETRY_WAIT_INITIAL` of jitter;
  it starts again after the next ack), then PROBES: it sends one message at a
  time until one is acked, then pipelines again. A queue that nacks for ever
  (e.g. x-overflow=reject-publish, full) therefore costs one publish per
  back-off period, never a hot loop, and the window fills up so the source
  stops being read (back-pressure to the spool). A connection that died
  silently (no RST) shows up as timeouts until the AMQP heartbeat (negotiated
  with the broker, 60 s by default) declares it dead; then the next case applies.
- connection or channel lost: the connection is dropped, a new one is opened
  with back-off (stamina; amqp.reconnect_backoff_min/_max; counted in
  `reconnects{side="amqp"}`), the exchange declared (or checked) again, and a
  new window on the new channel publishes every unconfirmed item again, in
  order. Probing, if it was under way, goes on after the reconnect.

Connecting: `start()` tries once (the bridge's start decides whether a failure
is fatal). `run()` connects if no session is open; that first connect is
retried with the same back-off as a reconnect, but only while the broker is
merely unreachable (`PublisherStartupError.transient`): refused credentials or a
missing exchange are configuration errors and end `run()`. After a loss every
startup error is retried, e.g. an exchange that an operator deleted and will
declare again. One connection, one back-off.

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

Logging: logger "bridge.publisher" (sessions, back-off, reconnects); lines
about single messages come from "bridge.confirms".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, cast

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.exceptions
import stamina
from yarl import URL

from bridge.causes import causes
from bridge.confirms import Composer, ConfirmWindow, Entry, State
from bridge.event import Item
from bridge.masking import hide
from bridge.message import MessageFormat
from bridge.metrics import Metrics
from bridge.routing import RoutingKeyBuilder
from bridge.settings import AmqpSettings
from bridge.tls import ssl_context_for, tls_failure_hint

log = logging.getLogger("bridge.publisher")

# Errors that mean "could not talk to the broker" while opening a session.
_BROKER_ERRORS = (aiormq.exceptions.AMQPError, OSError, TimeoutError)

# Not settings: fixed behaviour (tests may shorten them). How long opening a
# session (connection, channel, exchange) may take;
CONNECT_TIMEOUT: Final = 15.0
# the jitter of the reconnect back-off (amqp.reconnect_backoff_min/_max), so
# that a fleet of bridges does not reconnect in step;
RECONNECT_JITTER: Final = 1.0
# the back-off before probing again after the broker refused publishes or did
# not confirm them (see the module docstring).
RETRY_WAIT_INITIAL: Final = 0.1
RETRY_WAIT_MAX: Final = 30.0


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


class ItemSource(Protocol):
    """Where the publisher takes items from: the backlog (`bridge.backlog.Backlog`).

    In active/standby mode it is `bridge.ha.HaSource`, over the backlog. An
    item is a caught event or a gap marker (`bridge.event.Item`); both are
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


@dataclass(eq=False, slots=True)
class _Session:
    """One connection + confirming channel; `broken` once either is gone."""

    connection: aio_pika.abc.AbstractConnection
    channel: aiormq.Channel  # concrete: the window publishes on aiormq's channel
    broken: bool = False

    def mark_broken(self, *_: object) -> None:
        """Close callback of the connection and the channel."""
        self.broken = True


class _RefusedError(Exception):
    """The broker refused (nack) or did not confirm (timeout) publishes: back off."""


def _unreachable(exc: Exception) -> bool:
    """Whether a first connect may be retried: the broker was merely unreachable."""
    return isinstance(exc, PublisherStartupError) and exc.transient


def describe_error(amqp: AmqpSettings, exc: BaseException) -> str:
    """An exception as text, guaranteed free of the password."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return hide(text, URL(str(amqp.url.get_secret_value())).password)


async def open_connection(
    amqp: AmqpSettings, ssl_context: ssl.SSLContext | None,
    name: str = "dbevent-bridge publisher",
) -> aio_pika.abc.AbstractConnection:
    """Connect to the broker; PublisherStartupError (`transient` or not) when that fails.

    `ssl_context`: `bridge.tls.ssl_context_for(amqp)`, built once by the caller.
    """
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await aio_pika.connect(
                str(amqp.url.get_secret_value()), ssl_context=ssl_context,
                client_properties={"connection_name": name},
                connection_class=_Connection,
            )
    except _BROKER_ERRORS as exc:
        hint = tls_failure_hint(exc)  # names the setting to fix
        raise PublisherStartupError(
            f"cannot connect to RabbitMQ at {amqp.url_masked} (vhost {amqp.vhost!r}): "
            f"{describe_error(amqp, exc)}" + (f"; {hint}" if hint else ""),
            transient=_is_transient(exc),
        ) from None


class Publisher:
    """Publishes a source's items to one exchange, confirmed and in order, through outages.

    Use: optionally `await start()` (connect now; PublisherStartupError), then
    `await run(source)`, finally `await close()`. One run() at a time.
    """

    def __init__(
        self, amqp: AmqpSettings, metrics: Metrics, *,
        cloudevents_sources: Mapping[str, str] | None = None,
        connect: Callable[[], Awaitable[aio_pika.abc.AbstractConnection]] | None = None,
    ) -> None:
        """A publisher that is not connected yet; TlsConfigError if amqp.tls is unusable.

        `cloudevents_sources`: the CloudEvents source of each database (see
        `bridge.message.MessageFormat`). `connect` opens each session's
        connection (default: `open_connection`). An active/standby bridge
        passes the connection that holds its lease (`bridge.ha`), so that it
        publishes only while RabbitMQ says it is the active one; whatever
        `connect` raises other than PublisherStartupError ends `run()`.
        """
        self._amqp = amqp
        if connect is None:
            connect = functools.partial(open_connection, amqp, ssl_context_for(amqp))
        self._sessions = _Sessions(amqp, metrics, connect)
        message_format = MessageFormat(amqp.format, amqp.text_encoding, cloudevents_sources or {})
        self._composer = Composer(RoutingKeyBuilder(amqp.routing_key), message_format,
                                  amqp.gap_routing_key, metrics)

    @property
    def is_connected(self) -> bool:
        """True while a session is open and healthy (for readiness probes)."""
        return self._sessions.connected

    async def start(self) -> None:
        """Connect, open a confirming channel and declare (or check) the exchange, once.

        Raises PublisherStartupError when the broker cannot be reached, refuses
        the credentials or the vhost, or the exchange is missing (with
        declare_exchange=False) or declared differently.
        """
        await self._sessions.start()

    async def close(self) -> None:
        """Close the connection. Cancel a running run() first; idempotent."""
        await self._sessions.close()

    async def run(self, source: ItemSource) -> None:
        """Publish every item of `source` until get() returns None and all are confirmed.

        Connects first if no session is open: retried while the broker is
        merely unreachable, PublisherStartupError otherwise. Later connection
        losses are retried for ever. If run() is cancelled or the source
        raises, unconfirmed items are abandoned (never reported confirmed) and
        the exception propagates.
        """
        if not self._sessions.connected:
            await self._sessions.reopen()
        await _Run(self._amqp, self._sessions, self._composer, source).publish()


class _Sessions:
    """The publisher's connection to the broker: one session at a time, reopened with back-off."""

    def __init__(self, amqp: AmqpSettings, metrics: Metrics,
                 connect: Callable[[], Awaitable[aio_pika.abc.AbstractConnection]]) -> None:
        """No session yet."""
        self._amqp = amqp
        self._metrics = metrics
        self._connect = connect
        self._session: _Session | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        """True while a session is open and healthy."""
        session = self._session
        return session is not None and not session.broken and not session.connection.is_closed

    async def start(self) -> None:
        """Open a session now unless one is open; one attempt (PublisherStartupError)."""
        if self._closed:
            raise PublisherError("publisher is closed")
        if not self.connected:
            await self._drop()
            self._session = await self._open()

    async def close(self) -> None:
        """Close the session, and open none again."""
        self._closed = True
        await self._drop()

    def window(self, on_change: Callable[[], None], carried: list[Entry]) -> ConfirmWindow:
        """A window on the open session's channel, carrying an earlier window's entries."""
        assert self._session is not None
        amqp = self._amqp
        return ConfirmWindow(self._session.channel, amqp.exchange, amqp.publish_timeout,
                             self._metrics, on_change, carried=carried)

    async def reopen(self) -> None:
        """Open a session, retried with back-off (stamina) while waiting may cure the failure.

        Before the first session only an unreachable broker is waited for; after
        a loss, every startup error (see the module docstring).
        """
        amqp = self._amqp
        reconnecting = self._session is not None
        if reconnecting:
            log.warning("connection to RabbitMQ lost; reconnecting to %s", amqp.url_masked)
        await self._drop()
        retry_on: type[Exception] | Callable[[Exception], bool] = (
            PublisherStartupError if reconnecting else _unreachable
        )
        async for attempt in stamina.retry_context(
            on=retry_on, attempts=None, timeout=None,
            wait_initial=amqp.reconnect_backoff_min, wait_max=amqp.reconnect_backoff_max,
            wait_jitter=RECONNECT_JITTER,
        ):
            with attempt:
                if self._closed:
                    raise PublisherError("publisher closed while publishing")
                try:
                    self._session = await self._open()
                except PublisherStartupError as exc:
                    log.warning("%s failed: %s", "reconnect" if reconnecting else "connect", exc,
                                extra={"side": "amqp"})
                    raise
        if reconnecting:
            self._metrics.reconnects.labels(side="amqp").inc()
        else:
            log.info("connected to RabbitMQ at %s", amqp.url_masked, extra={"side": "amqp"})

    async def _open(self) -> _Session:
        connection = await self._connect()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                channel = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=False)
                await self._declare(channel)
                underlay = await channel.get_underlay_channel()
        except BaseException:
            await close_connection(connection)
            raise
        session = _Session(connection, cast(aiormq.Channel, underlay))
        connection.close_callbacks.add(session.mark_broken)
        channel.close_callbacks.add(session.mark_broken)
        return session

    async def _declare(self, channel: aio_pika.abc.AbstractChannel) -> None:
        amqp = self._amqp
        where = f"exchange {amqp.exchange!r} in vhost {amqp.vhost!r} at {amqp.url_masked}"
        try:
            if amqp.declare_exchange:
                await channel.declare_exchange(amqp.exchange, amqp.exchange_type, durable=True)
            else:
                await channel.get_exchange(amqp.exchange, ensure=True)  # passive declare
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise ExchangeMissingError(
                f"{where} does not exist; with declare_exchange=false it must be declared "
                "beforehand"
            ) from None
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise PublisherStartupError(
                f"{where} exists with other settings than durable {amqp.exchange_type!r}: {exc}"
            ) from None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise PublisherStartupError(f"{where}: access refused: {exc}") from None
        except _BROKER_ERRORS as exc:
            raise PublisherStartupError(
                f"cannot declare {where}: {describe_error(amqp, exc)}"
            ) from None

    async def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.broken = True
            await close_connection(session.connection)


class _Run:
    """One `Publisher.run(source)`: the source's items through a window on each session."""

    def __init__(self, amqp: AmqpSettings, sessions: _Sessions, composer: Composer,
                 source: ItemSource) -> None:
        """A run on the open session of `sessions`."""
        self._amqp = amqp
        self._sessions = sessions
        self._composer = composer
        self._source = source
        self._kick = asyncio.Event()  # something changed: the loop looks again
        self._space = asyncio.Event()  # the window has room: the feeder looks again
        self._window = sessions.window(self._kick.set, [])
        self._eof = False
        # The broker refused publishes and acked none since: after a reconnect
        # go on probing, rather than sending the whole window into a full queue.
        self._refused = False

    async def publish(self) -> None:
        """Feed and drive the window until the source is drained and everything reported."""
        feeder = asyncio.create_task(self._feed())
        try:
            await self._loop(feeder)
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            await self._window.abandon()

    async def _loop(self, feeder: asyncio.Task[None]) -> None:
        while True:
            self._kick.clear()
            self._report()
            if feeder.done():
                feeder.result()  # re-raises the source's error, if any
            window = self._window
            if self._eof and not window:
                return
            if window.lost or not self._sessions.connected:
                await self._reconnect()
            elif window.failed or self._refused:
                await self._retry(feeder)
            else:
                window.send()
                await self._kick.wait()

    async def _feed(self) -> None:
        """Take items from the source while the window has room."""
        source = self._source
        try:
            while True:
                while len(self._window) >= self._amqp.confirm_window:
                    self._space.clear()
                    await self._space.wait()
                item = await source.get()
                if item is None:
                    self._eof = True
                    return
                # The current window: a reconnect may have replaced it during get().
                self._window.add(self._composer.entry(item))
                self._kick.set()
        finally:
            self._kick.set()

    def _report(self) -> None:
        """Report the settled prefix to the source, in order."""
        settled = self._window.settled()
        for entry in settled:
            self._source.confirmed(entry.item)
        if settled:
            self._space.set()

    async def _reconnect(self) -> None:
        """The session is gone: a new one, and a window on it that takes over the old one's."""
        old = self._window
        await old.abandon()
        await self._sessions.reopen()
        # What the feeder added to the old window meanwhile goes along too.
        self._window = self._sessions.window(self._kick.set, list(old.entries))
        again = sum(e.state is State.QUEUED and e.sends > 0 for e in self._window.entries)
        log.info("reconnected to %s; publishing %d unconfirmed message(s) again",
                 self._amqp.url_masked, again)

    async def _retry(self, feeder: asyncio.Task[None]) -> None:
        """Back off, then publish one message at a time until the broker acks one.

        Each attempt lets what is in flight settle; one that saw a refusal
        (nack or timeout) queues the failed messages again and raises _RefusedError,
        so stamina waits its back-off before the next attempt, which sends
        a single message (the probe). A lost channel leaves the probing to
        go on after the reconnect.
        """
        self._refused = True
        async for attempt in stamina.retry_context(
            on=_RefusedError, attempts=None, timeout=None, wait_initial=RETRY_WAIT_INITIAL,
            wait_max=RETRY_WAIT_MAX, wait_jitter=RETRY_WAIT_INITIAL,
        ):
            with attempt:
                if feeder.done():
                    feeder.result()  # the source's error ends the run, as in _loop
                window = self._window
                if not window.in_flight and not window.failed:
                    window.send(limit=1)  # the probe
                await self._settle(window)
                if window.lost or not self._sessions.connected:
                    return
                if window.failed:
                    failed = window.requeue()
                    log.warning("broker refused or did not confirm %d message(s); publishing "
                                "again in about %.2f s, one at a time until it acks",
                                failed, attempt.next_wait)
                    raise _RefusedError(f"{failed} message(s) refused or not confirmed")
        self._refused = False

    async def _settle(self, window: ConfirmWindow) -> None:
        """Wait until nothing is in flight (or the session is gone)."""
        while window.in_flight and not window.lost and self._sessions.connected:
            self._kick.clear()
            await self._kick.wait()


async def close_connection(connection: aio_pika.abc.AbstractConnection) -> None:
    """Close `connection`, within 5 s, ignoring errors (also bridge.ha's connections).

    A dead peer must not hang us; errors closing a broken connection are moot.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5.0):
            await connection.close()
