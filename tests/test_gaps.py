"""Where a gap marker starts (bridge/gaps.py): the catch ledger, over a real spool."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge import gaps
from bridge.event import CaughtEvent
from bridge.gaps import CatchLedger
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
    """`reopen(spool)`: the spool as the next run opens it, after this run ended or crashed."""
    opened: list[Spool] = []

    def again(spool: Spool) -> Spool:
        spool.close()
        opened.append(Spool.open(path))
        return opened[-1]

    yield again
    for spool in opened:
        spool.close()


# --- within one run -------------------------------------------------------------------


def test_proofs_advance_the_gap_start_and_never_move_it_back(spool: Spool) -> None:
    ledger = CatchLedger(spool, EXACT)
    ledger.session_up(at(0))
    ledger.proved(at(5))
    ledger.proved(at(2))  # an older proof (a probe answered late) changes nothing
    assert ledger.session_down() == at(5)


def test_caught_events_prove_their_latest_raise_time(spool: Spool) -> None:
    ledger = CatchLedger(spool, EXACT)
    ledger.session_up(at(0))
    ledger.caught([event(at(1)), event(at(3)), event(at(2))])
    ledger.caught([])
    assert ledger.record() == at(3)


def test_nothing_is_proved_while_no_session_is_up(spool: Spool) -> None:
    ledger = CatchLedger(spool, EXACT)
    ledger.proved(at(1))
    ledger.caught([event(at(2))])
    assert ledger.record() is None
    assert ledger.session_down() is None
    ledger.session_up(at(3))
    assert ledger.session_down() == at(3)
    ledger.proved(at(9))  # after the loss: proves nothing about the next session
    assert ledger.record() is None


# --- across runs ----------------------------------------------------------------------


def test_a_first_run_has_no_restart_gap(spool: Spool) -> None:
    assert CatchLedger(spool, EXACT).restart_gap_from() is None


def test_a_crashed_run_leaves_the_last_recorded_proof(
    spool: Spool, reopen: Callable[[Spool], Spool]
) -> None:
    ledger = CatchLedger(spool, EXACT)
    ledger.session_up(at(0))
    ledger.proved(at(4))
    ledger.record()
    ledger.proved(at(6))  # not recorded before the crash: not trusted by the next run
    assert CatchLedger(reopen(spool), EXACT).restart_gap_from() == at(4)


def test_an_unreported_gap_outlives_the_run_until_its_marker_is_confirmed(
    spool: Spool, reopen: Callable[[Spool], Spool]
) -> None:
    ledger = CatchLedger(spool, EXACT)
    ledger.session_up(at(0))
    assert ledger.session_down() == at(0)
    ledger.session_up(at(10))
    ledger.proved(at(12))
    ledger.record()
    # The marker from 0 is not confirmed yet: a crash now must still report from 0.
    spool = reopen(spool)
    next_run = CatchLedger(spool, EXACT)
    assert next_run.restart_gap_from() == at(0)
    next_run.gap_reported(at(0))
    # Confirmed: the next restart's gap starts at the last proof instead.
    assert CatchLedger(spool, EXACT).restart_gap_from() == at(12)


def test_the_earliest_open_gap_is_kept_whatever_order_markers_confirm_in(spool: Spool) -> None:
    ledger = CatchLedger(spool, EXACT)
    for up, down in ((0, 1), (5, 6)):
        ledger.session_up(at(up))
        ledger.proved(at(down))
        ledger.session_down()
    assert CatchLedger(spool, EXACT).restart_gap_from() == at(1)
    ledger.gap_reported(at(6))
    assert CatchLedger(spool, EXACT).restart_gap_from() == at(1)
    ledger.gap_reported(at(1))
    ledger.gap_reported(at(1))  # twice: harmless
    assert CatchLedger(spool, EXACT).restart_gap_from() == at(6)  # the last proof, none open


def test_a_restart_gap_is_open_until_its_marker_is_confirmed(
    spool: Spool, reopen: Callable[[Spool], Spool]
) -> None:
    first = CatchLedger(spool, EXACT)
    first.session_up(at(3))
    first.record()
    spool = reopen(spool)
    second = CatchLedger(spool, EXACT)
    assert second.restart_gap_from() == at(3)
    second.session_up(at(20))
    second.record()
    assert CatchLedger(spool, EXACT).restart_gap_from() == at(3)
    second.gap_reported(at(3))
    assert CatchLedger(spool, EXACT).restart_gap_from() == at(20)


# --- without a usable spool --------------------------------------------------------------


def test_without_a_spool_the_session_is_followed_but_nothing_remembered() -> None:
    ledger = CatchLedger(None, EXACT)
    assert ledger.restart_gap_from() is None
    ledger.session_up(at(0))
    ledger.proved(at(2))
    assert ledger.record() == at(2)
    assert ledger.session_down() == at(2)
    ledger.gap_reported(at(2))


def test_a_closed_spool_is_left_alone(spool: Spool) -> None:
    ledger = CatchLedger(spool, EXACT)
    spool.close()
    ledger.session_up(at(0))
    assert ledger.session_down() == at(0)
    assert ledger.restart_gap_from() is None


def test_spool_errors_are_logged_never_raised(
    spool: Spool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object) -> None:
        raise SpoolError("disk I/O error")

    monkeypatch.setattr(spool, "set_meta", refuse)
    monkeypatch.setattr(spool, "get_meta", refuse)
    ledger = CatchLedger(spool, EXACT)
    with caplog.at_level(logging.WARNING, logger="bridge.gaps"):
        assert ledger.restart_gap_from() is None
        ledger.session_up(at(0))
        assert ledger.session_down() == at(0)  # still known in memory
    assert "cannot read session_alive_at from the spool: disk I/O error" in caplog.text
    assert "cannot record unreported_gap_from in the spool: disk I/O error" in caplog.text


def test_an_unreadable_time_in_the_spool_is_ignored(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    spool.set_meta(gaps._ALIVE_KEY, "yesterday-ish")
    with caplog.at_level(logging.WARNING, logger="bridge.gaps"):
        assert CatchLedger(spool, EXACT).restart_gap_from() is None
    assert "cannot read session_alive_at" in caplog.text


# --- the allowance for events still in the DBMS's event thread ------------------------


def test_a_proof_allows_for_events_still_in_the_event_thread_in_whole_seconds() -> None:
    ledger = CatchLedger(None, BOUND)
    ledger.session_up(at(0))
    ledger.proved(at(3))  # within the allowance: proves nothing new
    assert ledger.record() == at(0)
    ledger.proved(at(60.7))
    ledger.proved(at(30))  # an older proof never moves the start back
    assert ledger.session_down() == at(55)


def test_caught_events_prove_less_the_allowance() -> None:
    ledger = CatchLedger(None, BOUND)
    ledger.session_up(at(0))
    ledger.caught([event(at(20)), event(at(12))])
    assert ledger.session_down() == at(15)
