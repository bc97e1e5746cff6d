"""Where a gap starts, and its marker (bridge/gaps.py): the catch ledger, over a real spool."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge import gaps
from bridge.backlog import Backlog
from bridge.event import CaughtEvent, GapMarker, Item
from bridge.gaps import RESTART_REASON, CatchLedger
from bridge.metrics import Metrics
from bridge.spool import Spool, SpoolError

T0 = datetime(2026, 11, 25, 8, 0, 0, tzinfo=UTC)
# No allowance for the DBMS's event thread: a proof is its instant itself.
EXACT = timedelta(0)
# The default allowance (ingres.delivery_delay_max).
BOUND = timedelta(seconds=5)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(raised_at: datetime) -> CaughtEvent:
    return CaughtEvent("demodb", "ingres", "ev", raised_at, b"x")


def ledger_on(spool: Spool | None, bound: timedelta = EXACT) -> CatchLedger:
    return CatchLedger(Backlog(Metrics(), spool), "demodb", bound)


def spooled(spool: Spool) -> list[Item]:
    return [item for _, item in spool.read(0, 1000)]


def next_start_gap(spool: Spool) -> datetime | None:
    """Where the next start's restart gap begins: the `lost_from` of the marker its first
    session puts (None: no marker), from a copy of what `spool` has committed now."""
    copy = spool.path.with_name(spool.path.name + ".next-start")
    copy.unlink(missing_ok=True)
    with closing(sqlite3.connect(spool.path)) as now, closing(sqlite3.connect(copy)) as then:
        now.backup(then)
    next_run = Spool.open(copy)
    try:
        marker = ledger_on(next_run).session_up(at(1000), at(1001), reconnected=False)
    finally:
        next_run.close()
    return None if marker is None else marker.lost_from


def markers(spool: Spool) -> list[tuple[datetime, datetime, str]]:
    return [(m.lost_from, m.lost_until, m.reason)
            for m in spooled(spool) if isinstance(m, GapMarker)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
def spool(path: Path) -> Iterator[Spool]:
    opened = Spool.open(path)
    yield opened
    opened.close()


@pytest.fixture
def reopen(path: Path) -> Iterator[Callable[[Spool], Spool]]:
    """`reopen(spool)`: the spool as the next run opens it, after this run ended or crashed.

    Closing the spool alone is the crash: whatever a backlog holds uncommitted is lost.
    """
    opened: list[Spool] = []

    def again(spool: Spool) -> Spool:
        spool.close()
        opened.append(Spool.open(path))
        return opened[-1]

    yield again
    for spool in opened:
        spool.close()


# --- within one run -------------------------------------------------------------------


async def test_proofs_advance_the_gap_start_and_never_move_it_back(spool: Spool) -> None:
    ledger = ledger_on(spool)
    ledger.session_up(at(0), at(1), reconnected=False)
    ledger.proved(at(5))
    ledger.proved(at(2))  # an older proof (a probe answered late) changes nothing
    assert ledger.session_down("cut") == at(5)


async def test_caught_events_prove_their_latest_raise_time(spool: Spool) -> None:
    ledger = ledger_on(spool)
    ledger.session_up(at(0), at(1), reconnected=False)
    ledger.caught([event(at(1)), event(at(3)), event(at(2))])
    ledger.caught([])
    assert ledger.record() == at(3)


async def test_nothing_is_proved_while_no_session_is_up(spool: Spool) -> None:
    ledger = ledger_on(spool)
    ledger.proved(at(1))
    ledger.caught([event(at(2))])
    assert ledger.record() is None
    assert ledger.session_down("cut") is None
    ledger.session_up(at(3), at(4), reconnected=False)
    assert ledger.session_down("cut") == at(3)
    ledger.proved(at(9))  # after the loss: proves nothing about the next session
    assert ledger.record() is None


async def test_a_reconnect_puts_the_marker_of_the_outage_in_the_spool(spool: Spool) -> None:
    ledger = ledger_on(spool)
    assert ledger.session_up(at(0), at(1), reconnected=False) is None  # a first run: no gap
    ledger.proved(at(4))
    ledger.session_down("ingres connection lost")
    ledger.session_down("a second report of the same loss")  # the window starts at the first
    marker = ledger.session_up(at(20), at(21), reconnected=True)
    assert marker is not None
    assert (marker.database, marker.lost_from, marker.lost_until, marker.reason) == (
        "demodb", at(4), at(21), "ingres connection lost")
    # Committed with the ledger's move past the window, in one transaction.
    assert spooled(spool) == [marker]
    assert next_start_gap(spool) == at(20)
    assert ledger.session_up(at(30), at(31), reconnected=True) is None  # no loss since


async def test_the_events_before_the_proof_are_committed_with_it(spool: Spool) -> None:
    backlog = Backlog(Metrics(), spool)
    ledger = CatchLedger(backlog, "demodb", EXACT)
    ledger.session_up(at(0), at(1), reconnected=False)
    caught = [event(at(2)), event(at(3))]
    for item in caught:
        backlog.put(item)
    ledger.caught(caught)
    assert spooled(spool) == []  # put, not committed yet: the proof waits for them
    assert next_start_gap(spool) == at(0)
    ledger.record()
    assert spooled(spool) == caught
    assert next_start_gap(spool) == at(3)


# --- across runs ----------------------------------------------------------------------


async def test_a_first_run_has_no_restart_gap(spool: Spool) -> None:
    assert next_start_gap(spool) is None


async def test_a_crashed_run_leaves_the_last_recorded_proof(
    spool: Spool, reopen: Callable[[Spool], Spool]
) -> None:
    ledger = ledger_on(spool)
    ledger.session_up(at(0), at(1), reconnected=False)
    ledger.proved(at(4))
    ledger.record()
    ledger.proved(at(6))  # not recorded before the crash: not trusted by the next run
    assert next_start_gap(reopen(spool)) == at(4)


async def test_the_first_session_after_an_earlier_run_reports_the_restart_gap(
    spool: Spool, reopen: Callable[[Spool], Spool]
) -> None:
    first = ledger_on(spool)
    first.session_up(at(3), at(4), reconnected=False)
    first.record()
    spool = reopen(spool)
    second = ledger_on(spool)
    assert next_start_gap(spool) == at(3)
    marker = second.session_up(at(20), at(21), reconnected=False)
    assert marker is not None
    assert (marker.lost_from, marker.lost_until, marker.reason) == (at(3), at(21), RESTART_REASON)
    assert markers(spool) == [(at(3), at(21), RESTART_REASON)]
    assert next_start_gap(spool) == at(20)
    second.session_down("cut")
    later = second.session_up(at(40), at(41), reconnected=True)
    assert later is not None
    assert later.reason == "cut"  # the restart gap is reported once


async def test_a_version_1_ledgers_unreported_gap_is_reported_once(
    spool: Spool, reopen: Callable[[Spool], Spool]
) -> None:
    # A spool the earlier release left: a gap from 2 never confirmed, a later proof.
    spool.append([], {"unreported_gap_from": at(2).isoformat(),
                      "session_alive_at": at(9).isoformat()})
    spool = reopen(spool)
    ledger = ledger_on(spool)
    assert next_start_gap(spool) == at(2)
    ledger.session_up(at(20), at(21), reconnected=False)
    assert markers(spool) == [(at(2), at(21), RESTART_REASON)]
    assert spool.get_meta("unreported_gap_from") == ""  # in the marker now: not again
    assert next_start_gap(spool) == at(20)


# --- a crash at any point loses no window ------------------------------------------------

# The child follows one session through a loss and a reconnect, then SIGKILLs
# itself at the point given; the parent reopens the spool as the next start does.
_CHILD = """
import asyncio, os, signal, sys
from datetime import timedelta
from pathlib import Path
from bridge.backlog import Backlog
from bridge.gaps import CatchLedger
from bridge.metrics import Metrics
from bridge.spool import Spool
from tests.test_gaps import at

def crash_at(point):
    if sys.argv[2] == point:
        os.kill(os.getpid(), signal.SIGKILL)

async def main():
    # Deletes at once: a confirm is durable before the crash.
    backlog = Backlog(Metrics(), Spool.open(Path(sys.argv[1])), delete_max=1)
    ledger = CatchLedger(backlog, "demodb", timedelta(0))
    ledger.session_up(at(0), at(1), reconnected=False)
    ledger.proved(at(10))
    ledger.record()
    crash_at("session up")
    ledger.session_down("ingres connection lost")
    crash_at("session lost")
    ledger.session_up(at(30), at(31), reconnected=True)
    crash_at("marker committed")
    marker = await backlog.get()
    crash_at("marker in flight")
    backlog.confirmed(marker)
    crash_at("marker confirmed")

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("point", "gap_from", "spooled_window"),
    [
        # Nothing lost yet; the next start covers from the last proof.
        ("session up", at(10), None),
        # The loss is not reported yet: the restart gap starts before it.
        ("session lost", at(10), None),
        # The marker is durable: the next start publishes it, and its own gap
        # starts where the new session began catching.
        ("marker committed", at(30), (at(10), at(31), "ingres connection lost")),
        ("marker in flight", at(30), (at(10), at(31), "ingres connection lost")),
        # Confirmed: reported, and forgotten.
        ("marker confirmed", at(30), None),
    ],
)
async def test_a_crash_at_any_point_leaves_the_window_to_the_next_start(
    path: Path, point: str, gap_from: datetime,
    spooled_window: tuple[datetime, datetime, str] | None,
) -> None:
    child = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _CHILD, str(path), point],
        cwd=Path(__file__).parent.parent, capture_output=True, timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    spool = Spool.open(path)
    try:
        assert next_start_gap(spool) == gap_from
        assert markers(spool) == ([spooled_window] if spooled_window else [])
    finally:
        spool.close()
    # Whatever the point, the lost window [10, 31] is reported by what is left.
    lost_from, lost_until = at(10), at(31)
    covered_from = gap_from if spooled_window is None else spooled_window[0]
    assert point == "marker confirmed" or covered_from <= lost_from <= lost_until


# --- without a usable spool --------------------------------------------------------------


async def test_without_a_spool_the_session_is_followed_but_nothing_remembered() -> None:
    backlog = Backlog(Metrics(), None)
    ledger = CatchLedger(backlog, "demodb", EXACT)
    assert ledger.session_up(at(0), at(1), reconnected=False) is None  # nothing remembered
    ledger.proved(at(2))
    assert ledger.record() == at(2)
    assert ledger.session_down("cut") == at(2)
    marker = ledger.session_up(at(5), at(6), reconnected=True)
    assert marker is not None
    assert await backlog.get() == marker  # in memory only, but on its way


async def test_a_closed_spool_is_left_alone(spool: Spool) -> None:
    ledger = ledger_on(spool)
    spool.close()
    ledger.session_up(at(0), at(1), reconnected=False)
    assert ledger.session_down("cut") == at(0)
    assert next_start_gap(spool) is None  # nothing recorded in it


async def test_spool_errors_are_logged_never_raised(
    spool: Spool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object) -> None:
        raise SpoolError("disk I/O error")

    monkeypatch.setattr(spool, "append", refuse)
    monkeypatch.setattr(spool, "get_meta", refuse)
    with caplog.at_level(logging.WARNING):
        ledger = ledger_on(spool)
        assert ledger.session_up(at(0), at(1), reconnected=False) is None  # unreadable: none
        assert ledger.session_down("cut") == at(0)  # still known in memory
        assert ledger.session_up(at(5), at(6), reconnected=True) is not None
    assert "cannot read session_alive_at from the spool: disk I/O error" in caplog.text
    assert "the catch ledger is not advanced (session_alive_at)" in caplog.text
    # The marker could not be spooled: kept in memory, never dropped.
    assert "disk I/O error; 1 items kept in memory only (lost on a crash), 0 events dropped" in (
        caplog.text)


async def test_an_unreadable_time_in_the_spool_is_ignored(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    spool.append([], {gaps._ALIVE_KEY: "yesterday-ish"})  # what a damaged spool holds
    with caplog.at_level(logging.WARNING, logger="bridge.gaps"):
        assert ledger_on(spool).session_up(at(0), at(1), reconnected=False) is None
    assert "cannot read session_alive_at" in caplog.text


# --- the allowance for events still in the DBMS's event thread ------------------------


async def test_a_proof_allows_for_events_still_in_the_event_thread_in_whole_seconds() -> None:
    ledger = ledger_on(None, BOUND)
    ledger.session_up(at(0), at(1), reconnected=False)
    ledger.proved(at(3))  # within the allowance: proves nothing new
    assert ledger.record() == at(0)
    ledger.proved(at(60.7))
    ledger.proved(at(30))  # an older proof never moves the start back
    assert ledger.session_down("cut") == at(55)


async def test_caught_events_prove_less_the_allowance() -> None:
    ledger = ledger_on(None, BOUND)
    ledger.session_up(at(0), at(1), reconnected=False)
    ledger.caught([event(at(20)), event(at(12))])
    assert ledger.session_down("cut") == at(15)
