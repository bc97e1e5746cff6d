"""The backlog between catcher and publisher: a bounded queue in memory, backed by the spool.

It carries items (`bridge.event.Item`): caught events and gap markers, in one
order. A gap marker travels exactly like an event, except that no limit or
policy ever drops it (below).

Life of an item (spool enabled): `put` (on the event loop) appends it to a
pending batch; one loop iteration's items are committed to the spool in one
transaction; only then is the item handed to `get`, so a broker confirm can
never precede durability. `confirmed` forgets it: deletes are buffered a few
milliseconds and committed in one transaction (a crash in between publishes
those events again after the restart: at least once, never lost).

Memory is bounded by `max_events`. When it is full, further events live only
in the spool ("spilled") and are read back in order (by seq) when memory
drains; events left in the spool by an earlier run are read back first, with
their original message_id. With the spool disabled (faster, not crash-safe),
the in-memory queue is the only store and `max_events` is its limit.

The catch ledger (bridge.gaps) records how far catching got through `record`:
its metadata is committed in the same transaction as every item put before
it, so the spool never claims events it does not hold, and a gap marker is
stored no later than the ledger moves past its window.

When the store is full (spool: `max_bytes` of unconfirmed events; no spool:
`max_events` waiting in memory), `FullPolicy` decides for events, always
logged and counted (`events_dropped{reason="spool_full"}`). A gap marker is
always taken, under every policy, and never chosen to make room: dropping one
would lose the only notice of a loss, silently. Markers are few (one per lost
session) and small: the spool's limit leaves them out (`bytes` and the
gauges count them), the in-memory one counts each as one more item waiting.

- `drop_newest`: the new event is dropped.
- `drop_oldest`: the oldest event not yet handed to the publisher is dropped.
- `block`: the room gate closes so the catcher stops taking events from Ingres
  until there is room (`has_room`, and `wait_for_room` on the catcher thread).
  The events wait in the session's queue on the DBMS, which discards what its
  event memory cannot hold, unseen by the bridge. An event the catcher had
  already taken is still accepted (the bridge holds the only copy), so the
  limit can be overshot by what the catcher holds when the gate closes; past
  `block_slack` such events, `put` drops (logged, counted) and returns False,
  so memory and disk stay bounded even for a caller that ignores the gate.

Everything except `has_room` and `wait_for_room` must be called on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from bridge.event import CaughtEvent, GapMarker, Item
from bridge.metrics import Metrics
from bridge.spool import Spool, SpoolError, item_size

logger = logging.getLogger(__name__)

# Fill levels for the "getting full" warnings; the warning is not repeated
# until the fill has gone back below the low mark (no log flood at the edge).
_HIGH_FRACTION: Final = 0.8
_LOW_FRACTION: Final = 0.7
_NORMAL, _HIGH, _FULL = 0, 1, 2


class FullPolicy(StrEnum):
    """What to do with an event when the backlog is full (BRIDGE_SPOOL__FULL_POLICY)."""

    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"
    BLOCK = "block"


class Backlog:
    """Ordered, bounded, optionally durable hand-over from the catcher to the publisher.

    The publisher's `ItemSource` (`get`, `confirmed`; bridge.publisher).
    `shutdown` flushes and closes `spool`.
    """

    def __init__(
        self,
        metrics: Metrics,
        spool: Spool | None,
        *,
        max_events: int = 10_000,
        max_bytes: int = 1024**3,
        policy: FullPolicy | str = FullPolicy.BLOCK,
        flush_max: int = 256,
        delete_max: int = 512,
        delete_delay: float = 0.005,
        refill_chunk: int = 1024,
        block_slack: int = 1024,
    ) -> None:
        """Wrap `spool` (None: memory only). Leftovers in the spool are handed out first.

        `flush_max` caps the events per append transaction, `delete_max` and
        `delete_delay` (seconds) how many confirmed ids are buffered and for
        how long, `refill_chunk` how many spilled events are read back at once.
        """
        if max_events < 1 or max_bytes < 1 or flush_max < 1 or delete_max < 1:
            raise ValueError("max_events, max_bytes, flush_max and delete_max must be >= 1")
        self._metrics = metrics
        self._spool = spool
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._policy = FullPolicy(policy)
        self._flush_max = flush_max
        self._delete_max = delete_max
        self._delete_delay = delete_delay
        self._refill_chunk = max(1, min(refill_chunk, max_events))
        self._block_slack = block_slack
        self._fill = (_FillLevel("spool", "bytes", max_bytes, self._policy) if spool is not None
                      else _FillLevel("in-memory queue", "events", max_events, self._policy))

        self._mem: deque[Item] = deque()  # committed, waiting for get(), in order
        self._pending: list[Item] = []  # put, not yet committed to the spool
        self._meta: dict[str, str] = {}  # recorded, committed with the next batch
        self._flush_scheduled = False
        self._to_delete: list[str] = []  # confirmed ids, not yet deleted from the spool
        self._delete_timer: asyncio.TimerHandle | None = None
        # Spilled: items with seq > _mem_last_seq are in the spool only.
        self._spilled = False
        self._mem_last_seq = 0
        self._held = 0  # items not yet confirmed or dropped (pending, queued, in flight)
        self._held_bytes = 0
        self._marker_bytes = 0  # the gap markers' part of _held_bytes (not limited)
        self._closed = False
        self._shut = False
        self._overshoot = 0
        self._late_confirm_warned = False
        self._nonempty = asyncio.Event()
        self._room = threading.Event()
        self._room.set()
        self._dropped_full = metrics.events_dropped.labels(reason="spool_full")
        if spool is not None:
            self._resume(spool)
        self._after_change()
        self._update_gauges()

    def _resume(self, spool: Spool) -> None:
        """Adopt what an earlier run left in the spool: it is published first."""
        self._held = spool.depth
        self._held_bytes = spool.bytes
        self._marker_bytes = spool.gap_bytes
        if spool.depth:
            self._spilled = True
            logger.info(
                "spool %s holds %d unconfirmed events and %d gap markers (%d bytes) from an "
                "earlier run; publishing them first", spool.path,
                spool.depth - spool.gap_markers, spool.gap_markers, spool.bytes,
            )

    # --- intake (catcher side) -------------------------------------------------------

    def put(self, item: Item) -> bool:
        """Take a caught event or a gap marker; on the event loop. True when it was taken.

        False means an event was dropped (logged and counted): the backlog is
        closed, or full under `drop_newest` (or `block`, past `block_slack`).
        A gap marker is always taken; after `close` it waits in the spool for
        the next start.
        """
        size = item_size(item)
        if isinstance(item, CaughtEvent):
            if self._closed:
                self._drop(item, "shutdown", "the backlog is closed")
                return False
            if self._is_full(size) and not self._make_room(item, size):
                return False
        self._held += 1
        self._held_bytes += size
        if isinstance(item, GapMarker):
            self._marker_bytes += size
        if self._spool is None:
            self._mem.append(item)
            self._nonempty.set()
        else:
            self._pending.append(item)
            if len(self._pending) >= self._flush_max:
                self._flush()
            elif not self._flush_scheduled:
                # Everything put during this loop iteration goes in one transaction.
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        # Pending events are in memory too: the gauge bounds what this process holds.
        self._metrics.queue_depth.set(len(self._mem) + len(self._pending))
        self._after_change()
        return True

    def record(self, meta: Mapping[str, str]) -> None:
        """Commit every item put so far, then `meta`, in one spool transaction, now.

        The catch ledger's way to write: what it records is never ahead of the
        events (and gap markers) that prove it. Without a spool, or once it is
        closed, nothing is recorded. When items fail to commit, `meta` is left
        out (logged): the ledger stays behind, which widens the next gap
        marker instead of hiding a loss.
        """
        self._meta.update(meta)
        self._flush()

    def meta(self, key: str) -> str | None:
        """The value recorded under `key` in the spool (None: none, or no spool). SpoolError."""
        if self._spool is None or self._spool.closed:
            return None
        return self._spool.get_meta(key)

    @property
    def has_room(self) -> bool:
        """False while the `block` policy holds the catcher back; thread-safe."""
        return self._room.is_set() and not self._closed

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block the calling (catcher) thread until there is room; thread-safe.

        True when there is room; False on timeout or when the backlog is closed.
        Only the `block` policy ever makes this wait.
        """
        return self._room.wait(timeout) and not self._closed

    def _is_full(self, size: int) -> bool:
        if self._spool is None:
            return len(self._mem) >= self._max_events
        return self._held_bytes - self._marker_bytes + size > self._max_bytes

    def _make_room(self, event: CaughtEvent, size: int) -> bool:
        """Apply the full policy; True when `event` may be taken."""
        if self._policy is FullPolicy.DROP_NEWEST:
            self._drop(event, "spool_full", "the backlog is full (policy drop_newest)")
            return False
        if self._policy is FullPolicy.DROP_OLDEST:
            while self._is_full(size):
                victim = self._take_oldest_waiting()
                if victim is None:  # Everything is in flight: only the new one can go.
                    self._drop(event, "spool_full", "the backlog is full and all in flight")
                    return False
                self._drop(victim, "spool_full", "the backlog is full (policy drop_oldest)")
            return True
        if self._overshoot < self._block_slack:
            # Already taken from Ingres: refusing it now would lose it.
            self._overshoot += 1
            return True
        self._drop(event, "spool_full", "the backlog is full and the catcher ignores the gate")
        return False

    def _take_oldest_waiting(self) -> CaughtEvent | None:
        """Remove and return the oldest event not yet handed out, or None; never a marker."""
        index = _first_event(self._mem)
        if index is None and self._spilled:
            self._refill()
            index = _first_event(self._mem)
        if index is not None:
            victim = self._mem[index]
            del self._mem[index]
            if self._spool is not None:
                self._forget(victim.message_id)
        elif (index := _first_event(self._pending)) is not None:
            victim = self._pending.pop(index)
        else:
            return None
        assert isinstance(victim, CaughtEvent)  # _first_event found one
        self._held -= 1
        self._held_bytes -= item_size(victim)
        return victim

    def _drop(self, event: CaughtEvent, reason: str, why: str) -> None:
        counter = self._dropped_full if reason == "spool_full" else (
            self._metrics.events_dropped.labels(reason=reason))
        counter.inc()
        logger.error(
            "DROPPED event message_id=%s owner=%s name=%s database=%s: %s",
            event.message_id, event.owner, event.name, event.database, why,
        )

    # --- spool writes ----------------------------------------------------------------

    def _flush(self) -> None:
        """Commit pending items (and recorded meta, last) to the spool, then hand them to `get`."""
        self._flush_scheduled = False
        spool = self._spool
        if spool is None or spool.closed:
            return
        failed = False
        while self._pending or self._meta:
            batch = self._pending[: self._flush_max]
            del self._pending[: self._flush_max]
            meta: dict[str, str] = {}
            if not self._pending:  # the meta goes with the last items put before it
                meta, self._meta = self._meta, {}
                if failed and meta:
                    _ledger_behind(meta)
                    meta = {}
            try:
                spool.append(batch, meta)
            except SpoolError as exc:
                failed = True
                self._spool_failed(batch, exc)
                if meta:
                    _ledger_behind(meta)
                continue
            self._committed(batch, spool.last_seq)
        self._update_gauges()
        if self._mem:
            self._nonempty.set()

    def _committed(self, batch: list[Item], last_seq: int) -> None:
        if self._spilled:
            return  # Read back from the spool, in order, once memory drains.
        room = self._max_events - len(self._mem)
        if room >= len(batch):
            self._mem.extend(batch)
            self._mem_last_seq = last_seq
            return
        self._mem.extend(batch[:room])
        self._mem_last_seq = last_seq - len(batch) + room
        self._spilled = True
        logger.info("in-memory queue full (%d events): spilling to the spool", self._max_events)

    def _spool_failed(self, batch: list[Item], exc: SpoolError) -> None:
        """Keep what memory can hold (not crash-safe), and every gap marker; drop the rest, loudly.

        Kept items go after what memory holds: with the spool spilled, that is
        ahead of spilled items, the one case where order yields to not losing.
        """
        if not batch:
            logger.warning("%s", exc)
            return
        room = max(0 if self._spilled else self._max_events - len(self._mem), 0)
        keep: list[Item] = []
        lose: list[CaughtEvent] = []
        for item in batch:
            if isinstance(item, GapMarker) or len(keep) < room:
                keep.append(item)
            else:
                lose.append(item)
        logger.error(
            "%s; %d items kept in memory only (lost on a crash), %d events dropped",
            exc, len(keep), len(lose),
        )
        self._mem.extend(keep)
        for event in lose:
            self._held -= 1
            self._held_bytes -= item_size(event)
            self._drop(event, "spool_error", "the spool cannot be written")

    def _refill(self) -> None:
        """Read spilled items back into memory, in seq order."""
        assert self._spool is not None  # Only the spool ever spills.
        limit = min(self._refill_chunk, self._max_events - len(self._mem))
        if limit <= 0:
            return
        rows = self._spool.read(self._mem_last_seq, limit)
        self._mem.extend(item for _, item in rows)
        if rows:
            self._mem_last_seq = rows[-1][0]
        if len(rows) < limit or self._mem_last_seq >= self._spool.last_seq:
            # Caught up with what is committed: later commits go straight to memory.
            self._spilled = False
            self._mem_last_seq = self._spool.last_seq
            logger.info("spilled items all read back from the spool")

    # --- output (publisher side) -----------------------------------------------------

    async def get(self) -> Item | None:
        """The next item, in order; None once closed and everything was handed out."""
        while True:
            if not self._mem and self._spilled and not self._shut:
                self._refill()
            if self._mem:
                item = self._mem.popleft()
                self._metrics.queue_depth.set(len(self._mem) + len(self._pending))
                if self._spool is None:
                    self._after_change()  # Without a spool, the limit counts what waits.
                return item
            if self._shut or (self._closed and not self._pending):
                return None
            self._nonempty.clear()
            await self._nonempty.wait()

    def confirmed(self, item: Item) -> None:
        """The broker confirmed `item` (calls come in order): forget it durably, soon."""
        if self._shut:
            self._late_confirms(1)
            return
        self._held -= 1
        size = item_size(item)
        self._held_bytes -= size
        if isinstance(item, GapMarker):
            self._marker_bytes -= size
        if self._spool is not None:
            self._forget(item.message_id)
        self._after_change()

    def _late_confirms(self, count: int) -> None:
        if not self._late_confirm_warned:
            self._late_confirm_warned = True
            logger.warning(
                "%d confirm(s) after the spool was closed: those items stay in the spool and "
                "are published again on the next start (warned once)", count,
            )

    def _forget(self, message_id: str) -> None:
        """Buffer a delete; flushed when `delete_max` ids wait or after `delete_delay`."""
        self._to_delete.append(message_id)
        if len(self._to_delete) >= self._delete_max:
            self._flush_deletes()
        elif self._delete_timer is None:
            loop = asyncio.get_running_loop()
            self._delete_timer = loop.call_later(self._delete_delay, self._flush_deletes)

    def _flush_deletes(self) -> None:
        if self._delete_timer is not None:
            self._delete_timer.cancel()
            self._delete_timer = None
        if not self._to_delete or self._spool is None:
            return
        if self._spool.closed:
            self._late_confirms(len(self._to_delete))
            self._to_delete.clear()
            return
        ids, self._to_delete = self._to_delete, []
        try:
            self._spool.delete(ids)
        except SpoolError as exc:
            logger.error(
                "%s; %d confirmed items stay in the spool and will be published again "
                "after a restart", exc, len(ids),
            )
        self._update_gauges()

    # --- life cycle ------------------------------------------------------------------

    def _flush_all(self) -> None:
        """Commit pending items and buffered deletes now (closing, shutting down)."""
        self._flush()
        self._flush_deletes()

    def close(self) -> None:
        """Stop intake (a later event is dropped, logged) and flush to the spool; idempotent.

        A gap marker is still taken: committed like any item, it is published
        while the drain lasts, or else by the next start.

        `get` keeps handing out what is held and then returns None; `confirmed`
        keeps working until `shutdown`.
        """
        if self._closed:
            return
        self._closed = True
        self._flush_all()
        self._room.set()  # Wake a catcher blocked in wait_for_room; it sees "closed".
        self._nonempty.set()
        logger.info(
            "backlog closed: %d items waiting in memory, %d unconfirmed in all",
            len(self._mem), self._held,
        )

    def shutdown(self) -> None:
        """Close, flush the buffered deletes and close the spool; idempotent.

        Events not confirmed by now stay in the spool and are published first
        on the next start.
        """
        self.close()
        if self._shut:
            return
        self._flush_all()  # a gap marker may have come after close
        self._shut = True
        self._nonempty.set()
        if self._spool is not None:
            logger.info("spool %s closed holding %d items", self._spool.path, self._spool.depth)
            self._spool.close()

    @property
    def depth(self) -> int:
        """Items (events, gap markers) not yet confirmed or dropped: waiting, spilled, in flight."""
        return self._held

    # --- fill level: gate, gauges (its warnings: _FillLevel) --------------------------

    def _after_change(self) -> None:
        used = self._held_bytes - self._marker_bytes if self._spool is not None else len(self._mem)
        full = self._fill.update(used)
        if self._policy is FullPolicy.BLOCK and full == self._room.is_set() and not self._closed:
            if full:
                self._room.clear()
            else:
                self._open_gate()

    def _open_gate(self) -> None:
        self._room.set()
        self._overshoot = 0

    def _update_gauges(self) -> None:
        m = self._metrics
        m.queue_depth.set(len(self._mem) + len(self._pending))
        if self._spool is not None and not self._spool.closed:
            m.spool_depth.set(self._spool.depth)
            m.spool_bytes.set(self._spool.bytes)


class _FillLevel:
    """The "getting full" warnings of one limit (the spool's bytes or the memory's events).

    A level is logged when the fill reaches it; HIGH is not logged again until
    the fill has gone back below the low mark, FULL not until back to normal:
    no log flood at the edge.
    """

    def __init__(self, what: str, unit: str, limit: int, policy: FullPolicy) -> None:
        self._what = what
        self._unit = unit
        self._limit = limit
        self._policy = policy
        self._high_mark = limit * _HIGH_FRACTION
        self._low_mark = limit * _LOW_FRACTION
        self._level = _NORMAL
        self._warned_full = False

    def update(self, used: int) -> bool:
        """Log what `used` (of the limit) changes; True when the limit is reached."""
        full = used >= self._limit
        if full:
            level = _FULL
        elif used >= self._high_mark or (self._level != _NORMAL and used >= self._low_mark):
            level = _HIGH
        else:
            level = _NORMAL
        if level != self._level:
            self._changed(level, used)
        return full

    def _changed(self, level: int, used: int) -> None:
        what, unit = self._what, self._unit
        if level == _NORMAL:
            logger.info("%s back below %d%% of its limit (%d of %d %s)", what,
                        _LOW_FRACTION * 100, used, self._limit, unit)
            self._warned_full = False
        elif level == _HIGH and self._level == _NORMAL:
            logger.warning("%s above %d%% of its limit (%d of %d %s)", what,
                           _HIGH_FRACTION * 100, used, self._limit, unit)
        elif level == _FULL and not self._warned_full:
            self._warned_full = True
            logger.warning("%s FULL (%d of %d %s): policy %s applies", what, used,
                           self._limit, unit, self._policy.value)
        self._level = level


def _ledger_behind(meta: Mapping[str, str]) -> None:
    logger.warning("the catch ledger is not advanced (%s): the items before it were not "
                   "committed; a restart's gap marker starts earlier instead", ", ".join(meta))


def _first_event(items: deque[Item] | list[Item]) -> int | None:
    """The index of the first caught event in `items` (markers are skipped), or None."""
    return next((i for i, item in enumerate(items) if isinstance(item, CaughtEvent)), None)
