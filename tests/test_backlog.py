"""The backlog: order, durability before hand-out, spilling, resume, full policies, close,
and gap markers travelling like events (never dropped)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.backlog import Backlog, FullPolicy
from bridge.event import CaughtEvent, GapMarker, Item
from bridge.metrics import Metrics
from bridge.spool import Spool, item_size
from tests.polling import eventually

T0 = datetime(2024, 5, 17, 12, 0, 0, tzinfo=UTC)


def make_event(i: int) -> CaughtEvent:
    return CaughtEvent("db", "owner", f"ev{i % 5}", T0 + timedelta(microseconds=i),
                       b"t" * 10, message_id=f"id-{i:05d}")


SIZE = item_size(make_event(0))  # Every make_event has the same size.


def make_gap(i: int) -> GapMarker:
    return GapMarker("db", T0, T0 + timedelta(seconds=i), "ingres connection lost",
                     message_id=f"gap-{i:05d}")


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool.sqlite"


@pytest.fixture
def spool(spool_path: Path) -> Iterator[Spool]:
    opened = Spool.open(spool_path)
    yield opened
    opened.close()


def dropped(metrics: Metrics, reason: str = "spool_full") -> float:
    value = metrics.registry.get_sample_value(
        "dbevent_bridge_events_dropped_total", {"reason": reason})
    return value or 0.0


def spool_bytes(metrics: Metrics) -> float | None:
    """The spool_bytes gauge: what the operator sees of the committed items' size."""
    return metrics.registry.get_sample_value("dbevent_bridge_spool_bytes")


async def take(backlog: Backlog, count: int) -> list[Item]:
    return [e for e in [await asyncio.wait_for(backlog.get(), 5) for _ in range(count)]
            if e is not None]


async def test_event_is_handed_out_only_once_committed(metrics: Metrics, spool: Spool) -> None:
    backlog = Backlog(metrics, spool)
    events = [make_event(i) for i in range(3)]
    for event in events:
        assert backlog.put(event)
    assert spool.depth == 0  # Batched: nothing committed within the loop iteration.
    first = await backlog.get()
    assert first == events[0]
    assert spool.depth == 3  # Committed, in one transaction, before the hand-out.
    assert await take(backlog, 2) == events[1:]
    backlog.shutdown()


async def test_confirmed_events_are_deleted_in_batches(metrics: Metrics, spool: Spool) -> None:
    backlog = Backlog(metrics, spool, delete_max=4, delete_delay=0.01)
    events = [make_event(i) for i in range(10)]
    for event in events:
        backlog.put(event)
    got = await take(backlog, 10)
    for item in got[:5]:
        backlog.confirmed(item)
    assert spool.depth == 6  # Four deleted at once (delete_max), one buffered.
    assert await eventually(lambda: spool.depth == 5, 5)  # The timer flushed the buffered one.
    assert [e for _, e in spool.read(0, 100)] == events[5:]
    assert metrics.registry.get_sample_value("dbevent_bridge_spool_depth") == 5
    assert metrics.registry.get_sample_value("dbevent_bridge_spool_bytes") == 5 * SIZE
    for item in got[5:]:
        backlog.confirmed(item)
    assert backlog.depth == 0
    backlog.shutdown()  # Flushes the buffered deletes.
    reopened = Spool.open(spool.path)
    assert (reopened.depth, reopened.bytes) == (0, 0)
    reopened.close()


def in_memory(metrics: Metrics) -> float:
    """Events the backlog holds in memory (waiting for `get`, or for their commit)."""
    value = metrics.registry.get_sample_value("dbevent_bridge_queue_depth")
    assert value is not None
    return value


def spill_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the backlog said about spilling: "spilled" and "read back", in order."""
    said = [r.getMessage() for r in caplog.records if r.name == "bridge.backlog"]
    return ["spilled" if "spilling to the spool" in m else "read back"
            for m in said if "spilling to the spool" in m or "all read back" in m]


async def test_order_across_memory_spill_memory(
    metrics: Metrics, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    backlog = Backlog(metrics, spool, max_events=10, flush_max=8, refill_chunk=4)
    expected = [make_event(i) for i in range(200)]
    feed = iter(expected)
    got: list[Item] = []
    with caplog.at_level(logging.INFO, logger="bridge.backlog"):
        for round_no in range(40):
            for _ in range(7 if round_no < 20 else 3):  # Fill faster than we drain, then slower.
                event = next(feed, None)
                if event is not None:
                    backlog.put(event)
                    assert in_memory(metrics) <= 10 + 8  # Queue plus one pending batch.
            await asyncio.sleep(0)
            got.extend(await take(backlog, min(5, len(expected) - len(got))))
            assert in_memory(metrics) <= 10 + 8
        got.extend(await take(backlog, len(expected) - len(got)))
    # It spilled, and every spilled event was read back (spilling is over).
    said = spill_log(caplog)
    assert said[:1] == ["spilled"]
    assert said[-1:] == ["read back"]
    assert got == expected
    for item in got:
        backlog.confirmed(item)
    backlog.shutdown()


async def test_memory_stays_bounded_when_nobody_reads(metrics: Metrics, spool: Spool) -> None:
    backlog = Backlog(metrics, spool, max_events=50, flush_max=16)
    events = [make_event(i) for i in range(2000)]
    for event in events:
        backlog.put(event)
        assert in_memory(metrics) <= 50 + 16
    assert await eventually(lambda: in_memory(metrics) <= 50, 5)
    assert spool.depth == 2000
    assert await take(backlog, 2000) == events
    backlog.shutdown()


async def test_restart_yields_leftovers_first_with_their_ids(
    metrics: Metrics, spool_path: Path
) -> None:
    first = Backlog(metrics, Spool.open(spool_path))
    old = [make_event(i) for i in range(20)]
    for event in old:
        first.put(event)
    got = await take(first, 8)
    for item in got[:5]:  # Three more are in flight, unconfirmed, at "crash" time.
        first.confirmed(item)
    first.shutdown()

    resumed = Metrics()
    second = Backlog(resumed, Spool.open(spool_path), max_events=4, refill_chunk=3)
    assert second.depth == 15
    # All 15 wait in the spool only, until `get` reads them back.
    assert in_memory(resumed) == 0
    assert resumed.registry.get_sample_value("dbevent_bridge_spool_depth") == 15
    new = [make_event(i) for i in range(100, 105)]
    for event in new:
        second.put(event)
    assert await take(second, 20) == old[5:] + new
    second.shutdown()


async def test_drop_newest(metrics: Metrics, spool: Spool,
                           caplog: pytest.LogCaptureFixture) -> None:
    backlog = Backlog(metrics, spool, max_bytes=5 * SIZE, policy="drop_newest")
    events = [make_event(i) for i in range(8)]
    with caplog.at_level(logging.INFO, logger="bridge.backlog"):
        taken = [backlog.put(event) for event in events]
    assert taken == [True] * 5 + [False] * 3
    assert dropped(metrics) == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3
    for event, message in zip(events[5:], errors, strict=True):
        assert event.message_id in message
        assert f"owner={event.owner}" in message
        assert f"name={event.name}" in message
    assert await take(backlog, 5) == events[:5]
    assert await eventually(lambda: spool.depth == 5, 5)
    backlog.shutdown()


async def test_drop_oldest_spares_events_in_flight(metrics: Metrics, spool: Spool,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    backlog = Backlog(metrics, spool, max_bytes=5 * SIZE, policy=FullPolicy.DROP_OLDEST,
                      delete_delay=0.001)
    events = [make_event(i) for i in range(9)]
    for event in events[:5]:
        backlog.put(event)
    in_flight = await take(backlog, 2)
    with caplog.at_level(logging.ERROR, logger="bridge.backlog"):
        for event in events[5:]:
            assert backlog.put(event)
    assert dropped(metrics) == 4
    dropped_ids = [e.message_id for e in events[2:5]] + [events[5].message_id]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [next(i for i in dropped_ids if i in m) for m in messages] == dropped_ids
    assert await take(backlog, 3) == events[6:]
    # The dropped events are gone from the spool too; the ones in flight stay.
    assert await eventually(
        lambda: [e for _, e in spool.read(0, 100)] == in_flight + events[6:], 5)
    assert backlog.depth == 5
    backlog.shutdown()


async def test_drop_oldest_when_everything_is_in_flight_drops_the_new_one(
    metrics: Metrics, spool: Spool
) -> None:
    backlog = Backlog(metrics, spool, max_bytes=2 * SIZE, policy="drop_oldest")
    backlog.put(make_event(0))
    backlog.put(make_event(1))
    await take(backlog, 2)
    assert not backlog.put(make_event(2))
    assert dropped(metrics) == 1
    backlog.shutdown()


async def test_block_closes_the_gate_and_overshoot_is_bounded(
    metrics: Metrics, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    backlog = Backlog(metrics, spool, max_bytes=4 * SIZE, policy="block", block_slack=2)
    events = [make_event(i) for i in range(8)]
    with caplog.at_level(logging.INFO, logger="bridge.backlog"):
        for event in events[:4]:
            assert backlog.put(event)
        assert not backlog.has_room
        assert not backlog.wait_for_room(0.01)
        # The catcher already held two when the gate closed: still taken, not lost.
        assert backlog.put(events[4])
        assert backlog.put(events[5])
        # A caller that ignores the gate gets drops, so memory and disk stay bounded.
        assert not backlog.put(events[6])
        assert dropped(metrics) == 1

        waiter_saw: list[bool] = []
        waiter = threading.Thread(target=lambda: waiter_saw.append(backlog.wait_for_room(5)))
        waiter.start()
        got = await take(backlog, 6)
        assert not backlog.has_room
        for item in got[:3]:
            backlog.confirmed(item)
        await asyncio.to_thread(waiter.join, 5)
        await asyncio.sleep(0)
    assert waiter_saw == [True]
    assert backlog.has_room
    assert got == events[:6]
    assert any("FULL" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    backlog.shutdown()


async def test_fill_warnings_are_not_repeated(metrics: Metrics, spool: Spool,
                                              caplog: pytest.LogCaptureFixture) -> None:
    backlog = Backlog(metrics, spool, max_bytes=10 * SIZE, policy="drop_newest")
    with caplog.at_level(logging.INFO, logger="bridge.backlog"):
        for i in range(10):
            backlog.put(make_event(i))
        got = await take(backlog, 10)
        # Flap at the edge: confirm one, put one, many times.
        for i in range(10, 30):
            backlog.confirmed(got.pop(0))
            backlog.put(make_event(i))
            got.extend(await take(backlog, 1))
        for item in got:
            backlog.confirmed(item)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    warnings = [m for level, m in messages if level == logging.WARNING]
    assert len(warnings) == 2
    assert "above 80%" in warnings[0]
    assert "FULL" in warnings[1]
    assert sum("back below 70%" in m for level, m in messages if level == logging.INFO) == 1
    backlog.shutdown()


async def test_spool_off_keeps_order_and_bounds_memory(metrics: Metrics) -> None:
    backlog = Backlog(metrics, None, max_events=5, policy="drop_newest")
    events = [make_event(i) for i in range(7)]
    taken = [backlog.put(event) for event in events]
    assert taken == [True] * 5 + [False] * 2
    assert dropped(metrics) == 2
    assert metrics.registry.get_sample_value("dbevent_bridge_queue_depth") == 5
    got = await take(backlog, 5)
    assert got == events[:5]
    for item in got:
        backlog.confirmed(item)
    assert backlog.depth == 0
    backlog.close()
    assert await backlog.get() is None
    backlog.shutdown()


async def test_spool_off_drop_oldest_and_block(metrics: Metrics) -> None:
    oldest = Backlog(metrics, None, max_events=3, policy="drop_oldest")
    for i in range(5):
        assert oldest.put(make_event(i))
    assert await take(oldest, 3) == [make_event(i) for i in (2, 3, 4)]
    blocking = Backlog(metrics, None, max_events=3, policy="block", block_slack=1)
    for i in range(3):
        assert blocking.put(make_event(i))
    assert not blocking.has_room
    assert blocking.put(make_event(3))
    assert not blocking.put(make_event(4))
    assert dropped(metrics) == 3
    await take(blocking, 1)
    assert not blocking.has_room  # Three still wait: the limit counts what waits.
    await take(blocking, 1)
    assert blocking.has_room


async def test_close_semantics(metrics: Metrics, spool: Spool,
                               caplog: pytest.LogCaptureFixture) -> None:
    backlog = Backlog(metrics, spool)
    waiting = asyncio.create_task(backlog.get())
    await asyncio.sleep(0)
    backlog.put(make_event(0))
    assert await asyncio.wait_for(waiting, 5) == make_event(0)

    backlog.put(make_event(1))
    backlog.put(make_event(2))
    backlog.close()  # Flushes the pending batch at once.
    assert spool.depth == 3
    with caplog.at_level(logging.ERROR, logger="bridge.backlog"):
        assert not backlog.put(make_event(3))
    assert "id-00003" in caplog.text
    assert dropped(metrics, "shutdown") == 1
    assert not backlog.wait_for_room(0)
    assert await take(backlog, 2) == [make_event(1), make_event(2)]
    assert await backlog.get() is None
    assert await backlog.get() is None

    backlog.confirmed(make_event(0))  # Confirms still count after close...
    backlog.shutdown()  # ...and shutdown makes them durable before closing the spool.
    assert spool.closed
    reopened = Spool.open(spool.path)
    assert [e.message_id for _, e in reopened.read(0, 10)] == ["id-00001", "id-00002"]
    reopened.close()


async def test_close_flushes_the_deletes_and_a_confirm_after_the_spool_is_logged(
    metrics: Metrics, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    backlog = Backlog(metrics, spool, delete_delay=60)
    for i in range(3):
        backlog.put(make_event(i))
    got = await take(backlog, 3)
    backlog.confirmed(got[0])
    assert spool.depth == 3  # Buffered: the delete timer is a minute away.
    backlog.close()
    assert spool.depth == 2
    spool.close()
    with caplog.at_level(logging.WARNING, logger="bridge.backlog"):
        backlog.confirmed(got[1])  # Too late to be durable: published again next start.
        backlog.shutdown()
    assert "published again on the next start" in caplog.text


async def test_waiting_getter_sees_none_on_close(metrics: Metrics) -> None:
    backlog = Backlog(metrics, None)
    waiting = asyncio.create_task(backlog.get())
    await asyncio.sleep(0)
    backlog.close()
    assert await asyncio.wait_for(waiting, 5) is None


async def test_batch_the_spool_refuses_stays_in_memory(
    metrics: Metrics, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    backlog = Backlog(metrics, spool)
    backlog.put(make_event(0))
    assert await eventually(lambda: spool.depth == 1, 5)
    # The same message_id again makes the spool refuse the whole next batch.
    backlog.put(make_event(1))
    backlog.put(make_event(0))
    with caplog.at_level(logging.ERROR, logger="bridge.backlog"):
        assert await eventually(lambda: "kept in memory only" in caplog.text, 5)
    assert await take(backlog, 3) == [make_event(0), make_event(1), make_event(0)]
    assert spool.depth == 1
    backlog.shutdown()


def test_bad_settings_are_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="max_events"):
        Backlog(metrics, None, max_events=0)
    with pytest.raises(ValueError, match="drop_everything"):
        Backlog(metrics, None, policy="drop_everything")


# --- gap markers -------------------------------------------------------------------------


async def test_gap_markers_travel_in_line_with_events_and_survive_a_restart(
    metrics: Metrics, spool_path: Path
) -> None:
    first = Backlog(metrics, Spool.open(spool_path), max_events=3, refill_chunk=2)
    items: list[Item] = [make_event(0), make_gap(1), make_event(2), make_event(3), make_gap(4),
                         make_event(5)]
    for item in items:
        assert first.put(item)
    await asyncio.sleep(0)  # committed; more than memory holds: spilled too
    assert first.depth == 6
    assert spool_bytes(metrics) == sum(map(item_size, items))
    got = await take(first, 3)
    assert got == items[:3]
    first.confirmed(got[0])
    first.confirmed(got[1])  # the first marker is confirmed: forgotten like an event
    first.shutdown()

    spool = Spool.open(spool_path)
    assert (spool.depth, spool.gap_markers) == (4, 1)
    second = Backlog(Metrics(), spool)
    assert await take(second, 4) == items[2:]  # left in flight, then the rest, in order
    second.shutdown()


@pytest.mark.parametrize("policy", list(FullPolicy))
async def test_a_full_backlog_never_drops_a_gap_marker(
    metrics: Metrics, spool: Spool, policy: FullPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    # Room for two events: the spool's limit leaves markers out.
    backlog = Backlog(metrics, spool, max_bytes=2 * SIZE, policy=policy, block_slack=0)
    items: list[Item] = [make_gap(0), make_event(1), make_event(2)]
    with caplog.at_level(logging.ERROR, logger="bridge.backlog"):
        for item in items:
            assert backlog.put(item)
        assert backlog.put(make_gap(3))  # full: taken anyway
        assert backlog.put(make_event(4)) == (policy is FullPolicy.DROP_OLDEST)
        assert backlog.put(make_gap(5))
    assert "gap-" not in caplog.text
    got = await take(backlog, 5)
    # drop_oldest made room by the oldest event, passing over the marker before it.
    expected = ([make_gap(0), make_event(2), make_gap(3), make_event(4), make_gap(5)]
                if policy is FullPolicy.DROP_OLDEST
                else [make_gap(0), make_event(1), make_event(2), make_gap(3), make_gap(5)])
    assert got == expected
    assert dropped(metrics) == 1
    assert await eventually(lambda: spool.gap_markers == 3, 5)
    assert spool_bytes(metrics) == spool.bytes == 3 * item_size(make_gap(0)) + 2 * SIZE
    backlog.shutdown()


async def test_without_a_spool_a_gap_marker_is_taken_even_when_memory_is_full(
    metrics: Metrics,
) -> None:
    for policy in FullPolicy:
        backlog = Backlog(metrics, None, max_events=1, policy=policy, block_slack=0)
        assert backlog.put(make_event(0))
        assert backlog.put(make_gap(1))
        assert await take(backlog, 2) == [make_event(0), make_gap(1)]


async def test_a_closed_backlog_still_keeps_a_gap_marker_for_the_next_start(
    metrics: Metrics, spool: Spool
) -> None:
    backlog = Backlog(metrics, spool)
    backlog.close()
    assert not backlog.put(make_event(0))
    assert backlog.put(make_gap(1))
    backlog.shutdown()
    reopened = Spool.open(spool.path)
    assert [item for _, item in reopened.read(0, 10)] == [make_gap(1)]
    reopened.close()


async def test_record_commits_the_meta_with_what_was_put_before_it(
    metrics: Metrics, spool: Spool
) -> None:
    backlog = Backlog(metrics, spool, flush_max=2)
    items: list[Item] = [make_event(0), make_gap(1), make_event(2)]
    for item in items:
        backlog.put(item)  # the third flushes nothing yet: a batch holds two
    assert spool.depth == 2
    backlog.record({"session_alive_at": "proof"})
    assert spool.depth == 3
    assert spool.get_meta("session_alive_at") == "proof"
    assert backlog.meta("session_alive_at") == "proof"
    assert await take(backlog, 3) == items
    assert Backlog(metrics, None).meta("session_alive_at") is None
    backlog.shutdown()


async def test_a_meta_after_items_the_spool_refused_is_not_recorded(
    metrics: Metrics, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    backlog = Backlog(metrics, spool, max_events=2)
    backlog.put(make_event(0))
    backlog.record({"session_alive_at": "1"})
    backlog.put(make_event(0))  # the same id again: the spool refuses the batch
    backlog.put(make_event(5))
    backlog.put(make_gap(1))
    with caplog.at_level(logging.WARNING, logger="bridge.backlog"):
        backlog.record({"session_alive_at": "2"})
    assert spool.get_meta("session_alive_at") == "1"  # not ahead of what is stored
    # Memory had room for one more item: the first event; the marker is kept anyway.
    assert "2 items kept in memory only (lost on a crash), 1 events dropped" in caplog.text
    assert "the catch ledger is not advanced" in caplog.text
    assert dropped(metrics, "spool_error") == 1
    assert await take(backlog, 3) == [make_event(0), make_event(0), make_gap(1)]
    backlog.shutdown()
