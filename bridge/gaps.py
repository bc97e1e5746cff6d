"""How far catching got, kept in the spool, so that every gap marker starts where it must.

DBEvents raised while no session of ours is registered are lost by Ingres's
design. The bridge publishes a gap marker for each such window; this module
knows where a window starts, also after a crash (from the spool's meta).
"""

from __future__ import annotations

import logging
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Final

from bridge.event import CaughtEvent
from bridge.spool import Spool, SpoolError

log = logging.getLogger("bridge.gaps")

# Spool meta keys. ALIVE: until when the last session is known to have caught
# (and spooled) every event raised. GAP_FROM: start of a window whose gap marker
# is not confirmed yet; kept so that a crash before the confirm loses no gap.
_ALIVE_KEY: Final = "session_alive_at"
_GAP_FROM_KEY: Final = "unreported_gap_from"


class CatchLedger:
    """Until when every raised DBEvent is known to be caught, kept in the spool's meta.

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

    def __init__(self, spool: Spool | None, delay_bound: timedelta, scope: str = "") -> None:
        """Keep the ledger in `spool`; `scope` (a database) keeps several apart in one spool."""
        self._spool = spool
        self._delay_bound = delay_bound
        self._suffix = f"@{scope}" if scope else ""
        self._caught_until: datetime | None = None  # None: no session up
        self._open_gaps: list[datetime] = []  # gap starts whose marker is unconfirmed

    def restart_gap_from(self) -> datetime | None:
        """Where a gap left by an earlier run starts (None: no earlier session)."""
        found = self._read(_GAP_FROM_KEY) or self._read(_ALIVE_KEY)
        if found is not None:
            self._open_gap(found)
        return found

    def session_up(self, catching_from: datetime) -> None:
        """A session registered: events raised from `catching_from` (DBMS time) on are caught."""
        self._caught_until = catching_from
        self._write(_ALIVE_KEY, catching_from)

    def proved(self, moment: datetime) -> None:
        """What reached the session before `moment` (DBMS time) is handed over."""
        if self._caught_until is not None:
            proof = (moment - self._delay_bound).replace(microsecond=0)
            self._caught_until = max(self._caught_until, proof)

    def caught(self, events: list[CaughtEvent]) -> None:
        """Events were handed to the backlog (committed before the next `record`)."""
        if events:
            self.proved(max(e.raised_at for e in events))

    def record(self) -> datetime | None:
        """Write how far catching got to the spool (after committing the backlog)."""
        moment = self._caught_until
        if moment is not None:
            self._write(_ALIVE_KEY, moment)
        return moment

    def session_down(self) -> datetime | None:
        """The session is gone: remember durably where the gap starts, and return it."""
        moment = self.record()
        if moment is not None:
            self._open_gap(moment)
        self._caught_until = None
        return moment

    def gap_reported(self, lost_from: datetime) -> None:
        """The marker of the gap starting at `lost_from` is confirmed: forget that gap."""
        with suppress(ValueError):
            self._open_gaps.remove(lost_from)
        self._write(_GAP_FROM_KEY, min(self._open_gaps, default=None))

    def _open_gap(self, lost_from: datetime) -> None:
        self._open_gaps.append(lost_from)
        self._write(_GAP_FROM_KEY, min(self._open_gaps))

    def _read(self, key: str) -> datetime | None:
        if self._spool is None or self._spool.closed:
            return None
        try:
            value = self._spool.get_meta(key + self._suffix)
            return datetime.fromisoformat(value) if value else None
        except (SpoolError, ValueError) as exc:
            log.warning("cannot read %s from the spool: %s", key, exc)
            return None

    def _write(self, key: str, moment: datetime | None) -> None:
        if self._spool is None or self._spool.closed:
            return
        try:
            self._spool.set_meta(key + self._suffix, "" if moment is None else moment.isoformat())
        except SpoolError as exc:
            # Only the next gap marker's precision depends on it: never stop for it.
            log.warning("cannot record %s in the spool: %s", key, exc)
