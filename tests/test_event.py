"""Stable event ids: derived from the event, so every bridge that catches it agrees."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

from bridge.event import CaughtEvent, EventIdentities, stable_message_id

T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
EVENT = ("salesdb", "ingres", "order_created")
PINNED = "67e40b51722956128659679ef15bf202"


def _ids(identities: EventIdentities, raises: Sequence[tuple[datetime, bytes | None]]) -> list[str]:
    return [identities.message_id(*EVENT, when, text) for when, text in raises]


def test_two_bridges_catching_the_same_events_give_the_same_ids() -> None:
    raises = [(T0, b"a"), (T0, b"a"), (T0, b"b"), (T0 + timedelta(seconds=1), b"a"), (T0, None)]
    assert _ids(EventIdentities(), raises) == _ids(EventIdentities(), raises)


def test_identical_events_of_one_second_are_told_apart_by_their_ordinal() -> None:
    ids = _ids(EventIdentities(), [(T0, b"x")] * 3 + [(T0 + timedelta(seconds=1), b"x")])
    assert len(set(ids)) == 4
    assert ids[0] == stable_message_id(*EVENT, T0, b"x", 0)
    assert ids[2] == stable_message_id(*EVENT, T0, b"x", 2)
    assert ids[3] == stable_message_id(*EVENT, T0 + timedelta(seconds=1), b"x", 0)


def test_every_field_is_part_of_the_id() -> None:
    base = stable_message_id(*EVENT, T0, b"x", 0)
    assert base != stable_message_id("otherdb", "ingres", "order_created", T0, b"x", 0)
    assert base != stable_message_id("salesdb", "alice", "order_created", T0, b"x", 0)
    assert base != stable_message_id("salesdb", "ingres", "order_changed", T0, b"x", 0)
    assert base != stable_message_id(*EVENT, T0 + timedelta(seconds=1), b"x", 0)
    assert base != stable_message_id(*EVENT, T0, b"y", 0)
    assert base != stable_message_id(*EVENT, T0, None, 0)
    assert stable_message_id(*EVENT, T0, b"", 0) != stable_message_id(*EVENT, T0, None, 0)


def test_the_raise_time_counts_as_an_instant_whatever_its_zone() -> None:
    shifted = T0.astimezone(timezone(timedelta(hours=2)))
    assert stable_message_id(*EVENT, T0, b"x", 0) == stable_message_id(*EVENT, shifted, b"x", 0)


def test_the_derivation_never_changes_between_releases() -> None:
    # Bridges of different versions side by side (a rolling upgrade of a pair)
    # must agree: this value is fixed for ever.
    assert stable_message_id(*EVENT, T0, b"order 1001", 0) == PINNED


def test_events_left_in_the_spool_continue_the_ordinals() -> None:
    earlier = EventIdentities()
    first = earlier.message_id(*EVENT, T0, b"x")
    restarted = EventIdentities()
    restarted.observe([CaughtEvent(*EVENT, T0, b"x", message_id=first)])
    assert restarted.message_id(*EVENT, T0, b"x") == stable_message_id(*EVENT, T0, b"x", 1)


def test_ordinals_are_forgotten_once_seconds_have_passed() -> None:
    identities = EventIdentities()
    _ids(identities, [(T0 + timedelta(seconds=s), b"x") for s in range(100)])
    assert len(identities._counts) <= 4
