"""The Ingres side breaks while events flow: sessions dropped, the DBMS restarted, half-open.

Events raised while the bridge has no registered session are lost by
Ingres's design; the bridge must report each such window with a gap marker,
re-register quickly, and deliver every event it caught and every event
raised after it registered again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime
from pathlib import Path

import pytest

from bridge.app import _Lane
from bridge.settings import IngresSettings
from bridge.sim.server import ServerThread
from tests.faults.conftest import (
    HALF_OPEN_REPLACED_WITHIN_S,
    REREGISTERED_WITHIN_S,
    Fault,
    Raiser,
    RaiseRecord,
    Subscriber,
    Tally,
    bound_queue,
    check_gap_windows,
    fault_settings,
    reconnect_delays,
    registrations,
    seed,
    session_losses,
    sessions_dropped,
    start_bridge,
    verdict,
)
from tests.faults.proxy import TcpProxy
from tests.metric_value import metric_value
from tests.polling import eventually

pytestmark = pytest.mark.amqp


_DEFAULT_RECONNECT = {
    "reconnect_backoff_min": IngresSettings().reconnect_backoff_min,
    "reconnect_backoff_max": IngresSettings().reconnect_backoff_max,
}


def _after_last_gap(tally: Tally, raiser: Raiser) -> list[int]:
    """Events raised after the last gap's re-registration that did not arrive."""
    last = max(g.lost_until for g in tally.gaps)
    return [r.seq for r in raiser.records
            if r.before > last and r.seq not in tally.message_ids]


@pytest.mark.parametrize(
    ("drops", "restarts", "duration"),
    [
        pytest.param(2, 1, 6.0, id="short"),
        pytest.param(10, 4, 40.0, id="long", marks=pytest.mark.slow),
    ],
)
async def test_sessions_dropped_and_dbms_restarted(
    drops: int, restarts: int, duration: float, amqp_url: str, sim: ServerThread,
    unique_name: str, isolated_env: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.catcher")
    caplog.set_level(logging.INFO, logger="bridge.sim")
    rng = random.Random(run_seed := seed())
    settings = fault_settings(isolated_env, amqp_url, sim.target(), unique_name,
                              ingres=_DEFAULT_RECONNECT)
    faults = ["drop"] * drops + ["restart"] * restarts
    rng.shuffle(faults)
    back_up: list[float] = []  # time.time() at which the simulator listened again
    faults_at: list[float] = []
    async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
        bridge_ = await start_bridge(settings)
        try:
            raiser = Raiser(sim, duration=duration, pace=0.001).start()
            for fault in faults:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * duration / (len(faults) + 1))
                faults_at.append(time.time())
                if fault == "drop":
                    # The DBMS accepts connections all along: from the drop on.
                    back_up.append(time.time())
                    await asyncio.to_thread(sim.drop_sessions)
                else:
                    await asyncio.to_thread(sim.restart, rng.uniform(0.2, 1.0))
                    back_up.append(time.time())
            await raiser.wait()
            await sub.until(lambda t: len(t.gaps) >= len(faults)
                            and t.accounted(raiser.records), within=60)
        finally:
            await bridge_.shutdown()
    reconnect_s = reconnect_delays(registrations(caplog.records), back_up)
    struck = sessions_dropped(caplog.records)
    assert len(struck) == len(faults), f"the simulator logged {len(struck)} drops"
    result = verdict(
        "ingres drops/restarts", raiser.records, sub.tally, seed=run_seed, faults=len(faults),
        caught=int(metric_value(bridge_.metrics, "events_caught")),
        confirmed=int(metric_value(bridge_.metrics, "events_confirmed")),
        reconnect_after_back_s=reconnect_s,
    )
    result.check()
    assert result.gaps == len(faults), "one gap marker per lost session"
    assert {g.reason for g in sub.tally.gaps} != {""}
    assert not _after_last_gap(sub.tally, raiser)
    assert all(delay is not None for delay in reconnect_s), "a session was never re-registered"
    assert max(d for d in reconnect_s if d is not None) <= REREGISTERED_WITHIN_S, reconnect_s
    check_gap_windows(result, raiser.records, sub.tally, [
        Fault(at, hit, up + REREGISTERED_WITHIN_S)
        for at, hit, up in zip(faults_at, struck, back_up, strict=True)
    ])


@pytest.mark.parametrize(
    "outage", [pytest.param(4.0, id="4s"), pytest.param(30.0, id="30s", marks=pytest.mark.slow)],
)
async def test_reregistered_within_a_second_of_a_long_outage(
    outage: float, amqp_url: str, sim: ServerThread, unique_name: str, isolated_env: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A DBMS down longer than the first back-off steps: the bridge is back within 1 s anyway.

    With the default reconnect settings an exponential back-off alone (1, 2,
    4 s ...) would come back up to a whole step late; refused connects are
    retried quickly instead.
    """
    caplog.set_level(logging.INFO, logger="bridge.catcher")
    settings = fault_settings(isolated_env, amqp_url, sim.target(), unique_name,
                              ingres=_DEFAULT_RECONNECT)
    async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
        bridge_ = await start_bridge(settings)
        try:
            await asyncio.to_thread(sim.restart, outage)
            back_up = time.time()
            reported = await sub.until(lambda t: len(t.gaps) >= 1, within=30)
            after = Raiser(sim, count=20, first=1000).start()
            await after.wait()
            arrived = await sub.until(lambda t: t.distinct >= 20, within=30)
        finally:
            await bridge_.shutdown()
    assert reported, "no gap marker after the outage"
    assert arrived, "the events raised after the outage did not all arrive"
    (delay,) = reconnect_delays(registrations(caplog.records), [back_up])
    print(f"[long outage] down {outage:.0f} s, re-registered {delay} s after the DBMS was back")
    assert delay is not None, "never re-registered"
    assert delay <= REREGISTERED_WITHIN_S


# Issue 11: a half-open session is found within 5 s with the default probe settings.
HALF_OPEN_NOTICED_WITHIN_S = 5.0


async def test_half_open_session_is_noticed_by_the_idle_probe(
    amqp_url: str, sim: ServerThread, unique_name: str, isolated_env: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The DBMS stops answering without closing: the probe times out and the bridge reconnects.

    The probe settings are the defaults (idle_probe_interval, probe_timeout,
    get_event_timeout): the figure asserted is the one a user gets.
    """
    caplog.set_level(logging.INFO, logger="bridge.catcher")
    with TcpProxy("127.0.0.1", sim.port) as proxy:
        target = sim.target().replace(f",{sim.port}[", f",{proxy.port}[")
        defaults = IngresSettings()
        settings = fault_settings(isolated_env, amqp_url, target, unique_name,
                                  ingres={"get_event_timeout": defaults.get_event_timeout})
        async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
            bridge_ = await start_bridge(settings)
            try:
                before = Raiser(sim, count=50).start()
                await before.wait()
                await sub.until(lambda t: t.distinct >= 50, within=30)
                frozen_at = time.time()
                assert proxy.freeze() == 1  # half-open for good: nothing flows, nothing closes
                during = Raiser(sim, count=20, pace=0.01, first=1000).start()
                # Timed by the catcher's log lines: the session may be replaced
                # faster than polling /readyz would ever see it not ready.
                replaced = await eventually(lambda: len(registrations(caplog.records)) >= 2,
                                            within=60)
                await during.wait()
                reported = await sub.until(lambda t: len(t.gaps) >= 1, within=30)
                after = Raiser(sim, count=50, first=2000).start()
                await after.wait()
                await sub.until(lambda t: sum(s >= 2000 for s in t.message_ids) >= 50, within=30)
            finally:
                await bridge_.shutdown()
    assert replaced, "the half-open session was never replaced"
    (lost_at,) = session_losses(caplog.records)
    noticed_after = round(lost_at - frozen_at, 2)
    replaced_after = round(registrations(caplog.records)[1] - lost_at, 2)
    assert noticed_after <= HALF_OPEN_NOTICED_WITHIN_S, noticed_after
    assert replaced_after <= HALF_OPEN_REPLACED_WITHIN_S, replaced_after
    assert reported, "no gap marker after the half-open session"
    records = before.records + during.records + after.records
    result = verdict("half-open", records, sub.tally, noticed_after_s=noticed_after,
                     replaced_after_s=replaced_after)
    result.check()
    assert all(r.seq in sub.tally.message_ids for r in before.records + after.records)
    assert not _after_last_gap(sub.tally, after)


# The event thread's delay in the test: under ingres.delivery_delay_max (5 s by
# default), long enough for idle probes to be answered while events wait.
_EVENT_THREAD_DELAY_S = 3.0


@pytest.mark.parametrize("offset", [
    pytest.param(0.0, id="same-clock"),
    pytest.param(-300.0, id="dbms-5min-behind"),
    pytest.param(300.0, id="dbms-5min-ahead"),
])
async def test_gap_window_covers_events_still_in_the_event_thread_in_dbms_time(
    offset: float, amqp_url: str, sim: ServerThread, unique_name: str, isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SHARE events still queued in the DBMS's event thread when the session drops are lost.

    The gap marker must cover them in the DBMS clock, which stamps `raised_at`,
    however far this host's clock is from it, and although idle probes were
    answered after they were raised (an answered probe does not prove that
    the event thread had delivered them).
    """
    answered: list[datetime] = []
    proof = _Lane.on_proof

    def record(self: _Lane, moment: datetime) -> None:
        answered.append(moment)
        proof(self, moment)

    monkeypatch.setattr(_Lane, "on_proof", record)
    sim.set_clock_offset(offset)
    settings = fault_settings(isolated_env, amqp_url, sim.target(), unique_name,
                              ingres={"idle_probe_interval": 0.2, "get_event_timeout": 0.1})
    async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
        bridge_ = await start_bridge(settings)
        try:
            sim.set_delay(_EVENT_THREAD_DELAY_S * 1000)
            burst = Raiser(sim, count=20).start()
            await burst.wait()
            raised_dbms = max(r.after for r in burst.records) + offset
            probed = await eventually(
                lambda: any(m.timestamp() > raised_dbms for m in answered), within=30)
            pending = sim.stats()["events_pending"]
            await asyncio.to_thread(sim.drop_sessions)
            sim.set_delay(0)
            await sub.until(lambda t: len(t.gaps) >= 1, within=30)
            after = Raiser(sim, count=20, first=1000).start()
            await after.wait()
            await sub.until(lambda t: sum(s >= 1000 for s in t.message_ids) >= 20, within=30)
        finally:
            await bridge_.shutdown()
    assert probed, "no idle probe was answered while the burst waited in the event thread"
    assert pending == len(burst.records), "the burst was delivered before the drop"
    # The raiser timed its raises with this host's clock: in DBMS time they are `offset` later.
    in_dbms_time = [RaiseRecord(r.seq, r.before + offset, r.after + offset, r.targets)
                    for r in burst.records + after.records]
    result = verdict(f"event thread delay, DBMS clock {offset:+.0f} s", in_dbms_time, sub.tally,
                     gap=[(g.lost_from, g.lost_until) for g in sub.tally.gaps])
    result.check()
    assert result.in_gaps == len(burst.records), "the burst was lost and the gap covers it"
    (gap,) = sub.tally.gaps
    # What the window excuses: no wider than the delivery bound, the delay, the
    # whole-second clock and the reconnect allow.
    assert gap.lost_until - gap.lost_from <= (
        IngresSettings().delivery_delay_max + _EVENT_THREAD_DELAY_S + 2 + 10)
    assert all(r.seq in sub.tally.message_ids for r in after.records)
