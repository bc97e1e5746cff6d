"""The bridge process on Actian's REAL client library through the simulator (opt-in: real_client).

The same claims as test_bridge.py and tests/faults, made with the library a
user runs: the bridge runs as a process (`python -m bridge run`) whose
II_SYSTEM is the real client installation (BRIDGE_TEST_REAL_II_SYSTEM); the
simulator answers it in Ingres's own protocol (bridge/sim/PROTOCOL.md). The
events are raised by the test through the simulator's own library and
protocol, on the same port.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import pytest

from bridge.settings import IngresSettings
from bridge.sim.server import ServerThread
from tests.faults.conftest import (
    HALF_OPEN_REPLACED_WITHIN_S,
    REREGISTERED_WITHIN_S,
    Raiser,
    Subscriber,
    bound_queue,
    reconnect_delays,
    registrations_in_log,
    seed,
    session_losses_in_log,
    verdict,
)
from tests.faults.process import BridgeProcess, bridge_env
from tests.faults.proxy import TcpProxy
from tests.integration.conftest import (
    EVENTS,
    body_of,
    decoded_text,
    raise_all,
    receive,
    sample,
)
from tests.polling import wait_until

pytestmark = [pytest.mark.amqp, pytest.mark.real_client]


@pytest.fixture
def real_bridge(
    real_ii_system: Path, sim: ServerThread, amqp_url: str, unique_name: str, tmp_path: Path
) -> Iterator[BridgeProcess]:
    """A bridge process on the real library, not started yet."""
    with _bridge(real_ii_system, sim.target(), amqp_url, unique_name, tmp_path) as bridge:
        yield bridge


@contextmanager
def _bridge(
    ii_system: Path, target: str, amqp_url: str, exchange: str, tmp_path: Path,
    extra: dict[str, str] | None = None,
) -> Iterator[BridgeProcess]:
    env = bridge_env(
        tmp_path, target=target, amqp_url=amqp_url, exchange=exchange,
        spool=tmp_path / "spool.db",
        extra={
            "II_SYSTEM": str(ii_system),
            "BRIDGE_INGRES__EVENTS": json.dumps(list(EVENTS)),
            # A crash inside the C library leaves a Python traceback in the log.
            "PYTHONFAULTHANDLER": "1",
            **(extra or {}),
        },
    )  # fmt: skip
    bridge = BridgeProcess(env, tmp_path, tmp_path / "bridge.log")
    try:
        yield bridge
    finally:
        bridge.close()


async def test_10000_varied_events_arrive_once_in_order_with_exact_content(
    real_bridge: BridgeProcess, sim: ServerThread, subscriber: aio_pika.abc.AbstractQueue
) -> None:
    count = 10_000
    events = [sample(i) for i in range(count)]
    started = datetime.now(UTC).replace(microsecond=0)
    real_bridge.start()
    await asyncio.to_thread(real_bridge.wait_ready)
    await asyncio.to_thread(raise_all, sim.target(), events)
    messages = await receive(subscriber, count, within=300)
    caught = real_bridge.counter("events_caught")
    assert await asyncio.to_thread(real_bridge.terminate) == 0, real_bridge.tail()

    assert len(messages) == count, f"{count - len(messages)} events lost"
    assert len({m.message_id for m in messages}) == count, "duplicate message_id"
    for message, raised in zip(messages, events, strict=True):
        body = body_of(message)
        assert (body["owner"], body["name"], body["database"]) == (
            raised.owner,
            raised.name,
            "demodb",
        )
        assert decoded_text(body) == raised.text
        raised_at = datetime.fromisoformat(body["raised_at"])
        assert started - timedelta(seconds=1) <= raised_at <= datetime.now(UTC)
    assert caught == count


@pytest.mark.parametrize(
    ("drops", "restarts", "duration"),
    [
        pytest.param(2, 1, 6.0, id="short"),
        pytest.param(10, 4, 40.0, id="long", marks=pytest.mark.slow),
    ],
)
async def test_sessions_dropped_and_dbms_restarted(
    drops: int, restarts: int, duration: float, real_ii_system: Path, amqp_url: str,
    sim: ServerThread, unique_name: str, tmp_path: Path,
) -> None:  # fmt: skip
    """As test_ingres_faults.py: the default reconnect settings, one gap per fault,
    re-registered within 1 s of the DBMS being back, nothing else lost."""
    rng = random.Random(run_seed := seed())
    faults = ["drop"] * drops + ["restart"] * restarts
    rng.shuffle(faults)
    back_up: list[float] = []
    defaults = IngresSettings()
    reconnect = {
        "BRIDGE_INGRES__RECONNECT_BACKOFF_MIN": str(defaults.reconnect_backoff_min),
        "BRIDGE_INGRES__RECONNECT_BACKOFF_MAX": str(defaults.reconnect_backoff_max),
    }
    target = sim.target()
    with _bridge(real_ii_system, target, amqp_url, unique_name, tmp_path, reconnect) as real_bridge:
        async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
            real_bridge.start()
            await asyncio.to_thread(real_bridge.wait_ready)
            raiser = Raiser(sim, duration=duration, pace=0.001).start()
            for fault in faults:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * duration / (len(faults) + 1))
                if fault == "drop":
                    await asyncio.to_thread(sim.drop_sessions)
                else:
                    await asyncio.to_thread(sim.restart, rng.uniform(0.2, 1.0))
                back_up.append(time.time())
            await raiser.wait()
            settled = await sub.until(
                lambda t: len(t.gaps) >= len(faults) and t.accounted(raiser.records), within=60
            )
            caught = real_bridge.counter("events_caught")
            status = await asyncio.to_thread(real_bridge.terminate)
    logged = real_bridge.log.read_text(errors="replace")
    reconnect_s = reconnect_delays(registrations_in_log(logged), back_up)
    result = verdict(
        "real client: ingres drops/restarts", raiser.records, sub.tally, seed=run_seed,
        faults=len(faults), caught=int(caught), settled=settled, reconnect_after_back_s=reconnect_s,
    )  # fmt: skip
    result.check()
    assert status == 0, real_bridge.tail()
    assert result.gaps == len(faults), "one gap marker per lost session"
    assert {g.reason for g in sub.tally.gaps} != {""}
    last = max(g.lost_until for g in sub.tally.gaps)
    assert all(r.seq in sub.tally.message_ids for r in raiser.records if r.before > last)
    assert all(delay is not None for delay in reconnect_s), "a session was never re-registered"
    assert max(d for d in reconnect_s if d is not None) <= REREGISTERED_WITHIN_S, reconnect_s


async def test_half_open_session_is_noticed_and_replaced(
    real_ii_system: Path, amqp_url: str, sim: ServerThread, unique_name: str, tmp_path: Path
) -> None:
    with (
        TcpProxy("127.0.0.1", sim.port) as proxy,
        _bridge(real_ii_system, sim.target().replace(f",{sim.port}[", f",{proxy.port}["),
                amqp_url, unique_name, tmp_path) as bridge,
    ):  # fmt: skip
        async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
            bridge.start()
            await asyncio.to_thread(bridge.wait_ready)
            before = Raiser(sim, count=50).start()
            await before.wait()
            await sub.until(lambda t: t.distinct >= 50, within=30)
            frozen_at = time.time()
            assert proxy.freeze() == 1  # half-open for good: nothing flows, nothing closes
            during = Raiser(sim, count=20, pace=0.01, first=1000).start()
            # Timed by the catcher's log lines, as in test_ingres_faults.py.
            replaced = await asyncio.to_thread(
                wait_until, lambda: len(registrations_in_log(bridge.log.read_text())) >= 2, 60.0
            )
            await during.wait()
            reported = await sub.until(lambda t: len(t.gaps) >= 1, within=30)
            after = Raiser(sim, count=50, first=2000).start()
            await after.wait()
            await sub.until(lambda t: sum(s >= 2000 for s in t.message_ids) >= 50, within=30)
            status = await asyncio.to_thread(bridge.terminate)
    # Actian's abort never completes against a half-open peer: the bound, not it, ends the wait.
    assert replaced, "the half-open session was never replaced"
    logged = bridge.log.read_text(errors="replace")
    (lost_at,) = session_losses_in_log(logged)
    noticed_after = round(lost_at - frozen_at, 2)
    replaced_after = round(registrations_in_log(logged)[1] - lost_at, 2)
    assert noticed_after <= 5.0, noticed_after  # as test_ingres_faults.py, default probe
    assert replaced_after <= HALF_OPEN_REPLACED_WITHIN_S, replaced_after
    assert reported, "no gap marker after the half-open session"
    result = verdict("real client: half-open", before.records + during.records + after.records,
                     sub.tally, noticed_after_s=noticed_after,
                     replaced_after_s=replaced_after)  # fmt: skip
    result.check()
    assert all(r.seq in sub.tally.message_ids for r in before.records + after.records)
    assert status == 0, bridge.tail()
