"""The bridge process is killed (SIGKILL) at random points while events flow, and restarted.

What is asserted, and why that is the right claim: Ingres keeps nothing for
a session that is not registered, so events raised while no bridge process
is registered are lost by design. A killed process also loses what it had
caught but not yet committed to its spool. Each restart publishes a gap
marker from the instant the dead process had last recorded (in the spool)
that nothing raised earlier was missing, to the new registration. So: every
event NOT covered by a gap marker's window must arrive (duplicates only
under the same message_id: an event spooled but not yet forgotten when the
process died is published again). Events raised while no process was
registered (the simulator reports 0 targets) are counted separately; all of
them must fall inside a gap window.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from bridge.sim.server import ServerThread
from tests.faults.conftest import (
    Fault,
    Raiser,
    Subscriber,
    bound_queue,
    check_gap_windows,
    seed,
    verdict,
)
from tests.faults.process import BridgeProcess, bridge_env

pytestmark = pytest.mark.amqp


@pytest.mark.parametrize(
    ("kills", "duration"),
    [
        pytest.param(2, 8.0, id="2-kills"),
        pytest.param(10, 60.0, id="10-kills", marks=pytest.mark.slow),
    ],
)
async def test_sigkill_at_random_points_loses_no_caught_event(
    kills: int, duration: float, amqp_url: str, sim: ServerThread, unique_name: str,
    tmp_path: Path,
) -> None:
    rng = random.Random(run_seed := seed())
    env = bridge_env(tmp_path, target=sim.target(), amqp_url=amqp_url, exchange=unique_name,
                     spool=tmp_path / "spool.db")
    bridge = BridgeProcess(env, tmp_path, tmp_path / "bridge.log")
    async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
        try:
            bridge.start()
            await asyncio.to_thread(bridge.wait_ready)
            raiser = Raiser(sim, duration=duration, pace=0.001).start()
            faults: list[Fault] = []
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.3, 1.0) * duration / (kills + 1))
                killed_at = time.time()
                await asyncio.to_thread(bridge.kill)  # returns once the process is reaped
                dead_at = time.time()
                bridge.start()
                await asyncio.to_thread(bridge.wait_ready)
                faults.append(Fault(killed_at, dead_at, time.time()))
            await raiser.wait()
            settled = await sub.until(lambda t: len(t.gaps) >= kills
                                      and t.accounted(raiser.records), within=60)
            status = await asyncio.to_thread(bridge.terminate)
        finally:
            bridge.close()
        await sub.drain()
    result = verdict("sigkill", raiser.records, sub.tally, seed=run_seed, kills=kills,
                     settled=settled)
    result.check()
    assert status == 0, bridge.tail()
    assert result.gaps == kills, "one 'bridge restarted' gap marker per kill"
    assert {g.reason for g in sub.tally.gaps} == {"bridge restarted"}
    unregistered = [r for r in raiser.records if r.targets == 0]
    assert all(any(g.covers(r) for g in sub.tally.gaps) for r in unregistered)
    check_gap_windows(result, raiser.records, sub.tally, faults)
