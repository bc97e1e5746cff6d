"""How far catching got, kept in the spool, so that every gap marker starts where it must.

DBEvents raised while no session of ours is registered are lost by Ingres's
design. The bridge publishes a gap marker for each such window; this module
knows where a window starts, also after a crash (from the spool's meta).
"""

from __future__ import annotations

import logging
from contextlib import suppress
from datetime import datetime
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

    Evidence only, no timing assumption: events of one session arrive in the
    order they were raised, so once the caught events are committed, nothing
    raised before the last one's `raised_at` can be missing; a registration
    or an answered probe proves the same for its own time. The latest such
    instant is the earliest a loss can start: a gap marker starts there (also
    after a crash, from the spool). When the session is idle, that instant
    advances with the idle probes (`ingres.idle_probe_interval`). Without a
    spool nothing is remembered across runs.
    """

    def __init__(self, spool: Spool | None, scope: str = "") -> None:
        """Keep the ledger in `spool`; `scope` (a database) keeps several apart in one spool."""
        self._spool = spool
        self._suffix = f"@{scope}" if scope else ""
        self._caught_until: datetime | None = None  # None: no session up
        self._open_gaps: list[datetime] = []  # gap starts whose marker is unconfirmed

    def restart_gap_from(self) -> datetime | None:
        """Where a gap left by an earlier run starts (None: no earlier session)."""
        found = self._read(_GAP_FROM_KEY) or self._read(_ALIVE_KEY)
        if found is not None:
            self._open_gap(found)
        return found

    def session_up(self, registered_at: datetime) -> None:
        """A session registered: from here on, events are caught."""
        self._caught_until = registered_at
        self._write(_ALIVE_KEY, registered_at)

    def proved(self, moment: datetime) -> None:
        """Nothing raised before `moment` is missing (events handed over, or a probe)."""
        if self._caught_until is not None:
            self._caught_until = max(self._caught_until, moment)

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
