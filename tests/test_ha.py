"""The standby's bookkeeping (bridge.ha.HaSource): hold, settle, replay, confirm once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from bridge import ha
from bridge.backlog import Backlog
from bridge.event import CaughtEvent, GapMarker, Item
from bridge.ha import HaSource
from bridge.metrics import Metrics
from bridge.settings import AmqpSettings
from tests.faults.process import free_port
from tests.metric_value import metric_value
from tests.polling import eventually

T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def _event(i: int) -> CaughtEvent:
    return CaughtEvent("db", "ingres", "order_created", T0 + timedelta(seconds=i), b"x",
                       message_id=f"id-{i}")


class _CountingBacklog(Backlog):
    """A memory backlog that records every confirmed() it gets."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(metrics, None, max_events=1000)
        self.confirms: list[str] = []

    def confirmed(self, item: Item) -> None:
        self.confirms.append(item.message_id)
        super().confirmed(item)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def backlog(metrics: Metrics) -> _CountingBacklog:
    return _CountingBacklog(metrics)


async def _standby_holding(backlog: Backlog, metrics: Metrics, count: int) -> HaSource:
    source = HaSource(backlog, metrics, held_max=1000)
    source.become_standby()
    for i in range(count):
        backlog.put(_event(i))
    assert await eventually(lambda: metric_value(metrics, "ha_held") == count, 5)
    return source


async def test_a_standby_forgets_what_the_active_reports(
    backlog: _CountingBacklog, metrics: Metrics
) -> None:
    source = await _standby_holding(backlog, metrics, 5)
    source.settle(["id-1", "id-3"])
    assert backlog.confirms == ["id-1", "id-3"]
    assert metric_value(metrics, "ha_held") == 3
    source.close()


async def test_an_id_reported_before_the_standby_caught_it_is_forgotten_on_arrival(
    backlog: _CountingBacklog, metrics: Metrics
) -> None:
    source = await _standby_holding(backlog, metrics, 1)
    source.settle(["id-7"])  # the active was quicker than this bridge's catch
    backlog.put(_event(7))
    assert await eventually(lambda: backlog.confirms == ["id-7"], 5)
    assert metric_value(metrics, "ha_held") == 1
    source.close()


async def test_takeover_publishes_what_is_held_first_in_catch_order_then_new_events(
    backlog: _CountingBacklog, metrics: Metrics
) -> None:
    source = await _standby_holding(backlog, metrics, 4)
    source.settle(["id-2"])
    source.become_active(None)
    backlog.put(_event(10))
    taken = [await source.get() for _ in range(4)]
    assert [e.message_id for e in taken if e is not None] == ["id-0", "id-1", "id-3", "id-10"]
    for event in taken:
        assert event is not None
        source.confirmed(event)
    assert source.take_progress() == ["id-0", "id-1", "id-3", "id-10"]
    assert backlog.confirms == ["id-2", "id-0", "id-1", "id-3", "id-10"]


async def test_each_event_is_confirmed_to_the_backlog_once(
    backlog: _CountingBacklog, metrics: Metrics
) -> None:
    source = await _standby_holding(backlog, metrics, 2)
    source.become_active(None)
    first = await source.get()
    assert first is not None
    source.settle([first.message_id])  # a late report of the old active: ignored now
    source.confirmed(first)
    source.confirmed(first)  # a second confirm of the same event changes nothing
    assert backlog.confirms == [first.message_id]


async def test_an_active_that_loses_the_lease_keeps_what_it_had_not_confirmed(
    backlog: _CountingBacklog, metrics: Metrics
) -> None:
    source = HaSource(backlog, metrics, held_max=1000)
    source.become_active(None)
    for i in range(3):
        backlog.put(_event(i))
    taken = [await source.get() for _ in range(3)]
    assert taken[0] is not None
    source.confirmed(taken[0])
    source.become_standby()  # the publisher's run ended: the other two are held
    assert await eventually(lambda: metric_value(metrics, "ha_held") == 2, 5)
    source.become_active(None)
    again = [await source.get() for _ in range(2)]
    assert [e.message_id for e in again if e is not None] == ["id-1", "id-2"]


def _marker(i: int) -> GapMarker:
    return GapMarker("db", T0 + timedelta(seconds=i), T0 + timedelta(seconds=i + 1),
                     "ingres connection lost", message_id=f"gap-{i}")


async def test_a_standby_holds_its_gap_markers_where_it_holds_its_events(
    backlog: _CountingBacklog, metrics: Metrics
) -> None:
    source = await _standby_holding(backlog, metrics, 2)
    backlog.put(_marker(5))
    backlog.put(_event(6))
    assert await eventually(lambda: metric_value(metrics, "ha_held") == 3, 5)  # events only
    source.settle(["id-0", "id-1", "id-6", "gap-5"])  # a report never names a marker of ours
    assert backlog.confirms == ["id-0", "id-1", "id-6"]
    assert metric_value(metrics, "ha_held") == 0
    source.become_active(None)  # no report came: nobody may have covered the window
    taken = await source.get()
    assert taken == _marker(5)
    source.confirmed(taken)
    assert backlog.confirms[-1] == "gap-5"
    assert source.take_progress() == []  # the standby is not told about our markers


async def test_takeover_forgets_the_markers_a_later_report_covers_and_publishes_the_rest(
    backlog: _CountingBacklog, metrics: Metrics
) -> None:
    source = await _standby_holding(backlog, metrics, 1)
    backlog.put(_marker(1))
    await asyncio.sleep(0.01)  # the pull is stamped with this host's clock: keep them apart
    assert await eventually(lambda: len(source._held_gaps) == 1, 5)
    reported_at = time.time()  # the old active reported after the first window ended
    await asyncio.sleep(0.01)
    backlog.put(_marker(2))
    assert await eventually(lambda: len(source._held_gaps) == 2, 5)
    source.become_active(reported_at)
    assert backlog.confirms == ["gap-1"]  # forgotten: confirmed to the backlog, unpublished
    taken = [await source.get() for _ in range(2)]
    assert taken == [_event(0), _marker(2)]  # in catch order, the covered one left out


# --- the lease's connection: retried with back-off while the broker is unreachable ------


async def test_the_lease_connection_is_retried_doubling_up_to_its_maximum(
    metrics: Metrics, retry_waits: list[float], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ha, "_RECONNECT_MAX_S", 0.08)
    amqp = AmqpSettings.model_validate({
        "url": f"amqp://guest:guest@127.0.0.1:{free_port()}/", "exchange": "x",
        "reconnect_backoff_min": 0.01, "reconnect_backoff_max": 0.02,
    })
    lease = ha.Lease(amqp, "group", HaSource(_CountingBacklog(metrics), metrics, 10),
                     lambda _: None)
    running = asyncio.create_task(lease.run())
    try:
        assert await eventually(lambda: len(retry_waits) >= 5, 30)
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert retry_waits[:5] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.08])  # no jitter
    assert not lease.active.is_set()
    assert "HA group group: cannot connect to RabbitMQ, retrying in 0.0 s" in caplog.text
