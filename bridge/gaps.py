"""How far catching got, and the gap markers for the windows in which it did not.

DBEvents raised while no session of ours is registered are lost by Ingres's
design. For each such window the bridge puts a gap marker into the backlog,
where it travels like an event: committed to the spool, published, forgotten
once confirmed. This module knows where a window starts, also after a crash
(from the spool's meta), and puts the marker when the window ends.

Crash safety comes from one rule: the ledger writes through the backlog
(`Backlog.record`), whose transaction commits every item put before it. So
the spool never claims more than it holds, and a gap marker is committed in
the transaction that moves the ledger past its window. Killed at any moment,
the bridge leaves either the marker in the spool (published by the next
start) or the ledger before the window (the next start's restart gap covers it).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Final

from bridge.backlog import Backlog
from bridge.event import CaughtEvent, GapMarker
from bridge.spool import SpoolError

log = logging.getLogger("bridge.gaps")

# Spool meta key: until when the last session is known to have caught (and
# spooled) every event raised.
_ALIVE_KEY: Final = "session_alive_at"
# Spool meta key of version-1 spools: the start of a window whose gap marker was
# not confirmed. Read for a spool an earlier release left; never written again
# except to clear it, since markers now wait in the spool themselves.
_LEGACY_GAP_FROM_KEY: Final = "unreported_gap_from"
RESTART_REASON: Final = "bridge restarted"


class CatchLedger:
    """Until when every raised DBEvent of a database is caught, and its gap markers.

    Every instant here is DBMS time, the clock that stamps `raised_at`, never
    this host's: a gap window is compared with event times, and the two clocks
    may differ by any amount.

    What counts as proof. The DBMS time read before a session registered:
    every event raised later reaches that session while it lives. A caught
    event's `raised_at`, and the DBMS time of an answered probe, once what
    reached the session before is committed: a SHARE event reaches the session
    through the server's event thread (sce.c), some time after its stamp, so
    events stamped up to `delay_bound` earlier may still be on their way; the
    proof is that instant less the bound, rounded down to the whole second
    (events are stamped in whole seconds). The latest proof is the earliest a
    loss can start: a gap marker starts there (also after a crash, from the
    spool). Without a spool nothing is remembered across runs.
    """

    def __init__(
        self, backlog: Backlog, database: str, delay_bound: timedelta, scope: str = ""
    ) -> None:
        """Keep the ledger of `database` through `backlog`'s spool meta.

        `scope` keeps several databases' ledgers apart in one spool (the first
        database has none, as when it was the only one).
        """
        self._backlog = backlog
        self._database = database
        self._delay_bound = delay_bound
        self._suffix = f"@{scope}" if scope else ""
        self._caught_until: datetime | None = None  # None: no session up
        legacy_gap_from = self._read(_LEGACY_GAP_FROM_KEY)
        self._legacy_gap = legacy_gap_from is not None
        # Where a gap left by an earlier run starts (None: no earlier session).
        self._restart_from = legacy_gap_from or self._read(_ALIVE_KEY)
        self._lost_at: datetime | None = None  # the current outage's start
        self._lost_reason = ""

    def session_up(
        self, catching_from: datetime, registered_by: datetime, reconnected: bool
    ) -> GapMarker | None:
        """A session registered: events raised from `catching_from` (DBMS time) on are caught.

        After an outage (`reconnected`) or on the first session after an
        earlier run, puts the gap marker of the window that ends at
        `registered_by` into the backlog, committed with the ledger's new
        start; returns it (None: no window to report).
        """
        start, reason = ((self._lost_at, self._lost_reason) if reconnected
                         else (self._restart_from, RESTART_REASON))
        if not reconnected:
            self._restart_from = None  # Ingres kept nothing for us while no bridge ran.
        self._lost_at = None
        marker = None
        if start is not None:
            marker = GapMarker(self._database, start, registered_by, reason)
            self._backlog.put(marker)
        self._caught_until = catching_from
        meta = {_ALIVE_KEY: catching_from.isoformat()}
        if self._legacy_gap:  # that window is in the restart marker just put
            meta[_LEGACY_GAP_FROM_KEY] = ""
            self._legacy_gap = False
        self._write(meta)
        return marker

    def proved(self, moment: datetime) -> None:
        """What reached the session before `moment` (DBMS time) is handed over."""
        if self._caught_until is not None:
            proof = (moment - self._delay_bound).replace(microsecond=0)
            self._caught_until = max(self._caught_until, proof)

    def caught(self, events: list[CaughtEvent]) -> None:
        """Events were handed to the backlog (committed with the next `record`)."""
        if events:
            self.proved(max(e.raised_at for e in events))

    def record(self) -> datetime | None:
        """Commit how far catching got, with the events that prove it (through the backlog)."""
        moment = self._caught_until
        if moment is not None:
            self._write({_ALIVE_KEY: moment.isoformat()})
        return moment

    def session_down(self, reason: str) -> datetime | None:
        """The session is gone: record where the gap starts, and return it.

        The next `session_up` reports the window from there, for `reason`.
        """
        moment = self.record()
        if self._lost_at is None and moment is not None:
            self._lost_at, self._lost_reason = moment, reason
        self._caught_until = None
        return moment

    def _read(self, key: str) -> datetime | None:
        try:
            value = self._backlog.meta(key + self._suffix)
            return datetime.fromisoformat(value) if value else None
        except (SpoolError, ValueError) as exc:
            log.warning("cannot read %s from the spool: %s", key, exc)
            return None

    def _write(self, meta: dict[str, str]) -> None:
        # A spool error is logged by the backlog and never raised: only the next
        # restart gap's width depends on it.
        self._backlog.record({key + self._suffix: value for key, value in meta.items()})
