"""The publisher's plain core: one confirming channel, a window of publishes, their confirms.

How the publisher is layered (as aio-pika puts its robust connection over a plain one):

- this module, the core. `ConfirmWindow` is given one open channel with
  publisher confirms. It publishes its entries in the order they were added,
  whatever is queued as one batch (`bridge.amqp_batch`), gives each send
  `publish_timeout` to be confirmed (one watchdog timer for the whole window),
  and hands back the settled prefix in order (`settled()`), so a spool can
  forget a prefix. A nack, a timeout or a lost channel is an outcome it
  records (`failed`, `lost`), never something it acts on: it does not
  reconnect, wait or publish again by itself. `Composer` turns a source's
  items (caught events and gap markers alike) into entries: routing key and
  message, or a drop by policy.
- `bridge.publisher`, the recovery layer. `Publisher` opens sessions
  (connection, confirming channel, exchange), feeds the window from its source
  and decides what an outcome means: a lost channel is a reconnect, after
  which a new window on the new channel carries on with the old one's entries;
  a nack or a timeout is a back-off, then one message at a time until the
  broker acks again.

Outcomes of one send (mandatory=True):

- ack: settled. A message the broker RETURNED as unroutable (no queue bound for
  its key) is logged and counted (`events_returned`) and also settled:
  RabbitMQ acks it right after basic.return, and publishing it again would
  only bring it back again. The fix is a binding, so alert on
  `events_returned`; holding the pipeline would not help.
- nack, or no confirm within `publish_timeout`: failed (`failed` counts them
  until `requeue()` queues them again). The channel is still usable.
- the channel or its connection failed: failed, and `lost` is set. Only
  `abandon()` is left to do; the entries then go to a window on a new channel.

Items that can never be published are dropped by `Composer` (logged at ERROR,
counted in `events_dropped{reason}`: `routing_key_too_long`, the key would
exceed 255 bytes; `bad_event`, the message cannot be built, e.g. a naive raise
time) and settled in their turn, so they cannot block the items behind them.

Logging: logger "bridge.confirms". Lines about one entry carry
`extra={"message_id", "event_owner", "event_name"}` (`name` itself is a
reserved LogRecord attribute), for gap markers `message_id`, `event_database`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import partial

import aiormq
import aiormq.abc
import aiormq.exceptions

from bridge.amqp_batch import Confirmation, publish_batch
from bridge.event import CaughtEvent, GapMarker, Item
from bridge.message import MessageFormat, Outgoing
from bridge.metrics import Metrics
from bridge.routing import RoutingKeyBuilder, RoutingKeyTooLong

log = logging.getLogger("bridge.confirms")

class State(Enum):
    """Where an entry stands."""

    QUEUED = "queued"  # to be (re)sent
    SENT = "sent"  # written or being written; confirm pending
    ACKED = "acked"
    DROPPED = "dropped"  # by policy: settled, never sent
    NACKED = "nacked"
    TIMED_OUT = "timed out"
    LOST = "lost"  # the channel died before the confirm


SETTLED = frozenset({State.ACKED, State.DROPPED})
FAILED = frozenset({State.NACKED, State.TIMED_OUT, State.LOST})


@dataclass(eq=False, slots=True)
class Entry:
    """One item between its source and the in-order report that it is settled."""

    item: Item
    routing_key: str
    message: Outgoing | None  # None when dropped
    state: State
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

    def detach(self) -> None:
        """Forget the current send: its late write or confirm changes nothing."""
        self.write = None
        confirmation, self.confirmation = self.confirmation, None
        if confirmation is not None:
            confirmation.cancel()


class Composer:
    """Turns items into entries: routing key and message, or a drop by policy."""

    def __init__(self, router: RoutingKeyBuilder, message_format: MessageFormat,
                 gap_routing_key: str, metrics: Metrics) -> None:
        """Events get `router`'s key, gap markers `gap_routing_key`; drops are counted."""
        self._router = router
        self._format = message_format
        self._gap_routing_key = gap_routing_key
        self._metrics = metrics

    def entry(self, item: Item) -> Entry:
        """The entry of `item`: routing key and message, or a counted drop."""
        try:
            key = (self._gap_routing_key if isinstance(item, GapMarker)
                   else self._router.for_event(item))
        except RoutingKeyTooLong as exc:
            return self._dropped(item, "routing_key_too_long", str(exc))
        try:
            message = (self._format.gap(item) if isinstance(item, GapMarker)
                       else self._format.event(item))
        except Exception as exc:  # noqa: BLE001 (a malformed item must not stop the publisher)
            # A malformed item (e.g. a naive raise time) is a bug upstream. Dropping
            # it loudly beats failing the publisher: the spool would hand the same
            # item over again after every restart, and nothing behind it would go.
            return self._dropped(item, "bad_event", repr(exc))
        return Entry(item, key, message, State.QUEUED)

    def _dropped(self, item: Item, reason: str, why: str) -> Entry:
        entry = Entry(item, "", None, State.DROPPED)
        kind = "gap marker" if isinstance(item, GapMarker) else "event"
        log.error("%s dropped (%s): %s", kind, reason, why, extra=entry.log_extra())
        self._metrics.events_dropped.labels(reason=reason).inc()
        return entry


class ConfirmWindow:
    """Entries published on one confirming channel, each tracked until it settles, in order.

    The caller bounds how many entries it holds (the confirm window), calls
    `send()` to publish what is queued and `settled()` to take the settled
    prefix; `on_change` is called whenever an outcome arrives. Counts
    `events_published`, `events_republished`, `events_confirmed`,
    `events_returned`, `raise_to_confirm` and `gap_markers`.
    """

    def __init__(
        self, channel: aiormq.Channel, exchange: str, publish_timeout: float,
        metrics: Metrics, on_change: Callable[[], None], *, carried: Iterable[Entry] = (),
    ) -> None:
        """A window on `channel`, holding first the `carried` entries of an earlier one."""
        self._channel = channel  # concrete: publish_batch works on aiormq's channel
        self._exchange = exchange
        self._publish_timeout = publish_timeout
        self._metrics = metrics
        self._on_change = on_change
        self._entries: deque[Entry] = deque()  # not handed back yet; in order
        self._queued: deque[Entry] = deque()  # subset of _entries to send; in order
        self.in_flight = 0
        self.failed = 0  # nacked, timed out or lost since the last requeue()
        self.lost = False  # a write or a confirm failed for want of a channel
        self._writes: set[asyncio.Task[list[Confirmation]]] = set()
        # (deadline, entry) of every send, in send order, hence by deadline
        # (one publish_timeout for all); stale once that send has finished.
        self._deadlines: deque[tuple[float, Entry]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        for entry in carried:
            self.add(entry)

    def __len__(self) -> int:
        """Entries not handed back yet (settled or not)."""
        return len(self._entries)

    @property
    def entries(self) -> Iterable[Entry]:
        """Every entry not handed back yet, in order: what a window on a new channel carries."""
        return self._entries

    def add(self, entry: Entry) -> None:
        """Take `entry` after the others; a queued one goes out with the next send()."""
        self._entries.append(entry)
        if entry.state is State.QUEUED:
            self._queued.append(entry)

    def send(self, limit: int | None = None) -> None:
        """Publish the queued entries (at most `limit`) in one batch."""
        count = len(self._queued) if limit is None else min(limit, len(self._queued))
        if count:
            self._send([self._queued.popleft() for _ in range(count)])

    def settled(self) -> list[Entry]:
        """Take the settled prefix: the entries settled with every entry before them."""
        prefix = []
        entries = self._entries
        while entries and entries[0].state in SETTLED:
            prefix.append(entries.popleft())
        return prefix

    def requeue(self) -> int:
        """Queue the failed entries again, in their place among the queued ones; how many."""
        for entry in self._entries:
            if entry.state in FAILED:
                entry.state = State.QUEUED
        self._queued = deque(e for e in self._entries if e.state is State.QUEUED)
        failed, self.failed = self.failed, 0
        return failed

    async def abandon(self) -> None:
        """Stop: forget every send in flight and queue its entry again.

        For a channel that is gone, or a run that ends. The entries stay, in
        order (`entries`); late outcomes of the forgotten sends change nothing.
        """
        self._disarm()
        for entry in self._entries:
            entry.detach()
            if entry.state is State.SENT:
                entry.state = State.LOST
        self.in_flight = 0
        self.requeue()
        writes = list(self._writes)
        for write in writes:
            write.cancel()  # a frame not queued yet was never published
        await asyncio.gather(*writes, return_exceptions=True)

    # -- one batch of publishes --------------------------------------------------------

    def _send(self, batch: list[Entry]) -> None:
        # One write task per batch; each message's outcome arrives through its
        # confirmation future (_on_confirm), never through a task of its own.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        messages = []
        for entry in batch:
            assert entry.message is not None
            entry.state = State.SENT
            if entry.sends:
                self._metrics.events_republished.inc()
            entry.sends += 1
            entry.deadline, entry.expired = deadline, False
            messages.append((entry.routing_key, entry.message.body, entry.message.properties))
            self._deadlines.append((deadline, entry))
        self._metrics.events_published.inc(len(batch))
        self.in_flight += len(batch)
        write = loop.create_task(publish_batch(self._channel, self._exchange, messages))
        for entry in batch:
            entry.write = write
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        write.add_done_callback(partial(self._written, batch))
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._on_deadline)

    def _written(self, batch: list[Entry], write: asyncio.Task[list[Confirmation]]) -> None:
        """The batch's frame is queued for the writer (or the write failed)."""
        if write.cancelled() or write.exception() is not None:
            # Cancelled by the watchdog (the channel did not take the frame
            # within publish_timeout) or by abandon(), or failed: either way
            # nothing of this batch was published.
            if not write.cancelled():
                self.lost = True
                log.debug("publish failed: %r", write.exception())
            for entry in batch:
                if entry.write is write:
                    entry.write = None
                    self._failed(entry, State.TIMED_OUT if entry.expired else State.LOST)
            return
        for entry, confirmation in zip(batch, write.result(), strict=True):
            if entry.write is not write:
                confirmation.cancel()  # abandoned meanwhile
                continue
            entry.write, entry.confirmation = None, confirmation
            confirmation.add_done_callback(partial(self._on_confirm, entry))
            if entry.expired:
                confirmation.cancel()  # the watchdog fired before we got here

    def _on_confirm(self, entry: Entry, confirmation: Confirmation) -> None:
        if entry.confirmation is not confirmation:
            return  # abandoned meanwhile
        entry.confirmation = None
        if confirmation.cancelled() and entry.expired:
            self._failed(entry, State.TIMED_OUT)  # by the watchdog
            return
        error = None if confirmation.cancelled() else confirmation.exception()
        if isinstance(error, aiormq.exceptions.DeliveryError):
            self._failed(entry, State.NACKED)
        elif error is not None or confirmation.cancelled():
            # The channel failed or cancelled the confirm: it is gone.
            self.lost = True
            log.debug("publish failed: %r", error, extra=entry.log_extra())
            self._failed(entry, State.LOST)
        else:
            if isinstance(confirmation.result(), aiormq.abc.DeliveredMessage):
                self._returned(entry)
            self._acked(entry)
            self._settled()

    def _failed(self, entry: Entry, state: State) -> None:
        entry.state = state
        self.failed += 1
        # Per message at INFO: the recovery layer's back-off or reconnect line
        # sums each incident up.
        level = logging.DEBUG if state is State.LOST else logging.INFO
        log.log(level, "publish %s", state.value, extra=entry.log_extra())
        self._settled()

    def _settled(self) -> None:
        self.in_flight -= 1
        self._drop_stale_deadlines()
        self._on_change()

    def _returned(self, entry: Entry) -> None:
        self._metrics.events_returned.inc()
        log.warning("message returned as unroutable (no queue bound for routing key %r)",
                    entry.routing_key, extra=entry.log_extra())

    def _acked(self, entry: Entry) -> None:
        entry.state = State.ACKED
        item = entry.item
        if isinstance(item, CaughtEvent):
            self._metrics.events_confirmed.inc()
            latency = (datetime.now(UTC) - item.raised_at).total_seconds()
            self._metrics.raise_to_confirm.observe(max(latency, 0.0))
        else:  # counted once confirmed, wherever the marker was put (or held) before
            self._metrics.gap_markers.labels(database=item.database).inc()

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


def _is_current(deadline: float, entry: Entry) -> bool:
    """True while `entry`'s send with this deadline awaits its write or confirm."""
    return entry.state is State.SENT and entry.deadline == deadline
