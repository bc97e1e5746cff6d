"""A start that follows an earlier run reports the window in which no bridge was registered."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.event import CaughtEvent
from bridge.settings import database_of
from bridge.sim.server import ServerThread
from bridge.spool import Spool
from tests.faults.conftest import (
    Raiser,
    Subscriber,
    bound_queue,
    fault_settings,
    start_bridge,
    verdict,
)
from tests.test_spool import write_v1_spool

pytestmark = pytest.mark.amqp


async def test_restart_publishes_a_gap_marker_covering_the_downtime(
    amqp_url: str, sim: ServerThread, unique_name: str, isolated_env: Path
) -> None:
    settings = fault_settings(isolated_env, amqp_url, sim.target(), unique_name)
    async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
        first = await start_bridge(settings)
        try:
            before = Raiser(sim, count=20).start()
            await before.wait()
            await sub.until(lambda t: t.distinct >= 20, within=30)
        finally:
            await first.shutdown()
        stopped = time.time()
        down = Raiser(sim, count=10, pace=0.02, first=100).start()
        await down.wait()
        second = await start_bridge(settings)
        try:
            after = Raiser(sim, count=20, first=200).start()
            await after.wait()
            await sub.until(lambda t: t.distinct >= 40 and len(t.gaps) >= 1, within=30)
        finally:
            await second.shutdown()
        await sub.drain()

    (gap,) = sub.tally.gaps
    print(f"[restart gap] first stopped at {stopped:.3f}, gap {gap}")
    assert gap.reason == "bridge restarted"
    assert gap.lost_from <= stopped  # from when the first run last proved it had everything
    assert all(r.targets == 0 for r in down.records)  # nobody was registered: lost by design
    assert all(gap.covers(r) for r in down.records)
    # Registered before `after` began; the DBMS clock reads whole seconds, and
    # lost_until is the reading after registering plus one second.
    assert gap.lost_until <= after.records[0].after + 1.0
    verdict("restart gap", before.records + down.records + after.records, sub.tally).check()
    assert all(r.seq in sub.tally.message_ids for r in before.records + after.records)
    spool = Spool.open(isolated_env / "spool.db")
    try:
        # The marker waited in the spool like an event, and was forgotten once confirmed;
        # the ledger of the earlier release is never written.
        assert (spool.depth, spool.gap_markers) == (0, 0)
        assert spool.get_meta("unreported_gap_from") is None
        assert spool.get_meta("session_alive_at")
    finally:
        spool.close()


async def test_a_spool_the_earlier_release_left_is_published_and_its_ledger_honoured(
    amqp_url: str, sim: ServerThread, unique_name: str, isolated_env: Path
) -> None:
    """A version-1 spool (events, and a gap whose marker was never confirmed) is taken over."""
    settings = fault_settings(isolated_env, amqp_url, sim.target(), unique_name)
    database = database_of(sim.target())
    gap_from = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    left = [CaughtEvent(database, "ingres", "ev", gap_from - timedelta(seconds=i),
                        f"seq:{9000 + i}".encode(), message_id=f"v1-{i}") for i in range(5)]
    write_v1_spool(isolated_env / "spool.db", left, {
        "unreported_gap_from": gap_from.isoformat(),
        "session_alive_at": (gap_from + timedelta(minutes=5)).isoformat(),
    }, deleted=3)
    async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
        bridge = await start_bridge(settings)
        try:
            raiser = Raiser(sim, count=5).start()
            await raiser.wait()
            await sub.until(lambda t: t.distinct >= 10 and len(t.gaps) >= 1, within=30)
        finally:
            await bridge.shutdown()
        await sub.drain()
    # Its events are published first, under the ids they were spooled with.
    assert {seq: sub.tally.message_ids.get(seq) for seq in range(9000, 9005)} == {
        9000 + i: {f"v1-{i}"} for i in range(5)}
    verdict("v1 spool", raiser.records, sub.tally).check()
    assert sub.tally.distinct == 10
    # Its unconfirmed gap is reported, from where it started, not from the later proof.
    (gap,) = sub.tally.gaps
    assert gap.reason == "bridge restarted"
    assert gap.lost_from == gap_from.timestamp()
    spool = Spool.open(isolated_env / "spool.db")
    try:
        assert (spool.depth, spool.gap_markers) == (0, 0)
        assert spool.get_meta("unreported_gap_from") == ""  # reported: not again
        assert spool.last_seq > 8  # seqs went on from the earlier release's
    finally:
        spool.close()


async def test_first_start_on_a_fresh_spool_reports_no_gap(
    amqp_url: str, sim: ServerThread, unique_name: str, isolated_env: Path
) -> None:
    settings = fault_settings(isolated_env, amqp_url, sim.target(), unique_name)
    async with bound_queue(amqp_url, unique_name) as queue, Subscriber(queue) as sub:
        bridge = await start_bridge(settings)
        try:
            raiser = Raiser(sim, count=5).start()
            await raiser.wait()
            await sub.until(lambda t: t.distinct >= 5, within=30)
        finally:
            await bridge.shutdown()
    assert sub.tally.gaps == []
    assert sub.tally.distinct == 5
