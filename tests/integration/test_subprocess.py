"""The bridge as a real process: `python -m bridge run`, configured by environment variables.

What only a process shows: the CLI and its exit statuses, SIGTERM handling
(drain within the deadline, the rest kept in the spool), a restart on the same
spool, and the /metrics endpoint the tests read to know what the bridge holds.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aio_pika
import pytest

from bridge.message import GAP_MESSAGE_TYPE
from bridge.sim.server import ServerThread, SimServer
from bridge.spool import Spool
from tests.faults.process import BridgeProcess, bridge_env, free_port
from tests.faults.proxy import TcpProxy
from tests.integration.conftest import (
    EVENTS,
    Raised,
    body_of,
    decoded_text,
    raise_all,
    receive,
    sample,
)
from tests.polling import wait_until

pytestmark = pytest.mark.amqp


@pytest.fixture
def process_env(
    tmp_path: Path, sim: ServerThread, amqp_url: str, unique_name: str
) -> dict[str, str]:
    """Environment of a bridge process wired to `sim` and the test's exchange."""
    return bridge_env(
        tmp_path, target=sim.target(), amqp_url=amqp_url, exchange=unique_name,
        spool=tmp_path / "spool.db", extra={"BRIDGE_INGRES__EVENTS": json.dumps(list(EVENTS))},
    )


async def _stopped(bridge: BridgeProcess) -> int:
    return await asyncio.to_thread(bridge.terminate)


async def test_events_from_another_session_arrive_once_in_order_exact(
    process_env: dict[str, str], tmp_path: Path, sim: ServerThread,
    subscriber: aio_pika.abc.AbstractQueue,
) -> None:
    count = 2_000
    events = [sample(i) for i in range(count)]
    bridge = BridgeProcess(process_env, tmp_path, tmp_path / "bridge.log").start()
    try:
        await asyncio.to_thread(bridge.wait_ready)
        await asyncio.to_thread(raise_all, sim.target(), events)
        messages = await receive(subscriber, count, within=120)
        assert await asyncio.to_thread(
            wait_until, lambda: bridge.counter("events_confirmed") >= count, 30)
        caught = bridge.counter("events_caught")
        assert await _stopped(bridge) == 0, bridge.tail()
    finally:
        bridge.close()
    assert len(messages) == count, f"{count - len(messages)} lost\n{bridge.tail()}"
    assert len({m.message_id for m in messages}) == count, "duplicates"
    for message, raised in zip(messages, events, strict=True):
        body = body_of(message)
        assert (body["owner"], body["name"]) == (raised.owner, raised.name)
        assert decoded_text(body) == raised.text
    assert caught == count


async def test_sigterm_with_events_queued_keeps_them_and_a_restart_delivers_all(
    process_env: dict[str, str], tmp_path: Path, sim: ServerThread, amqp_url: str,
    unique_name: str, subscriber: aio_pika.abc.AbstractQueue,
) -> None:
    """Events pile up behind a stalled broker connection; SIGTERM; a restart delivers them."""
    count = 500
    host_port = amqp_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    spool = tmp_path / "spool.db"
    with TcpProxy(host, int(port)) as proxy:
        env = {**process_env,
               "BRIDGE_AMQP__URL": amqp_url.replace(host_port, f"127.0.0.1:{proxy.port}"),
               "BRIDGE_SHUTDOWN__DRAIN_TIMEOUT": "1"}
        first = BridgeProcess(env, tmp_path, tmp_path / "first.log").start()
        try:
            await asyncio.to_thread(first.wait_ready)
            proxy.pause()  # the broker connection stalls: nothing is confirmed
            events = [Raised("ingres", "order_created", f"queued #{i}".encode())
                      for i in range(count)]
            await asyncio.to_thread(raise_all, sim.target(), events)
            assert await asyncio.to_thread(
                wait_until, lambda: first.counter("events_caught") >= count, 60), first.tail()
            confirmed_before = first.counter("events_confirmed")
            status = await _stopped(first)
        finally:
            first.close()
    assert status == 0, first.tail()
    left = Spool.open(spool)
    try:
        spooled = left.depth
    finally:
        left.close()
    print(f"[sigterm] caught={count} confirmed before SIGTERM={confirmed_before:.0f} "
          f"left in the spool={spooled}")
    assert spooled == count - confirmed_before

    second = BridgeProcess(process_env, tmp_path, tmp_path / "second.log").start()
    try:
        await asyncio.to_thread(second.wait_ready)
        messages = await receive(subscriber, count + 1, within=60)  # + the restart gap marker
        assert await _stopped(second) == 0, second.tail()
    finally:
        second.close()
    events_in = [m for m in messages if m.type != GAP_MESSAGE_TYPE]
    gaps = [body_of(m) for m in messages if m.type == GAP_MESSAGE_TYPE]
    texts = [decoded_text(body_of(m)) for m in events_in]
    per_text = Counter(texts)
    ids_per_text: dict[bytes | None, set[str | None]] = {}
    for message, text in zip(events_in, texts, strict=True):
        ids_per_text.setdefault(text, set()).add(message.message_id)
    duplicates = sum(n - 1 for n in per_text.values())
    print(f"[sigterm] after restart: received={len(per_text)} duplicates={duplicates} "
          f"gap markers={len(gaps)}")
    assert {e.text for e in events} <= set(per_text), "an event did not arrive"
    assert all(len(ids) == 1 for ids in ids_per_text.values()), "a duplicate with another id"
    assert [g["reason"] for g in gaps] == ["bridge restarted"]


def test_bad_settings_exit_2_with_one_line_per_problem(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**process_env, "BRIDGE_AMQP__CONFIRM_WINDOW": "0",
           "BRIDGE_SPOOL__FULL_POLICY": "sometimes", "BRIDGE_HTTP__LISTEN": "off"}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "run"], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=60, check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 2, lines
    assert any("confirm_window" in line for line in lines)
    assert any("full_policy" in line for line in lines)
    assert all(line.startswith("dbevent-bridge: ") for line in lines)


async def test_sighup_drains_like_sigterm(
    process_env: dict[str, str], tmp_path: Path, sim: ServerThread,
    subscriber: aio_pika.abc.AbstractQueue,
) -> None:
    count = 50
    events = [Raised("ingres", "order_created", f"hup #{i}".encode()) for i in range(count)]
    bridge = BridgeProcess(process_env, tmp_path, tmp_path / "bridge.log").start()
    try:
        await asyncio.to_thread(bridge.wait_ready)
        await asyncio.to_thread(raise_all, sim.target(), events)
        assert await asyncio.to_thread(
            wait_until, lambda: bridge.counter("events_caught") >= count, 30), bridge.tail()
        bridge.send(signal.SIGHUP)
        status = await asyncio.to_thread(bridge.wait, 60)
    finally:
        bridge.close()
    assert status == 0, bridge.tail()
    assert bridge.logged("received SIGHUP: stopping intake and draining")
    messages = await receive(subscriber, count, within=30)
    assert len({m.message_id for m in messages}) == count
    left = Spool.open(tmp_path / "spool.db")
    try:
        assert left.depth == 0
    finally:
        left.close()


async def test_second_signal_exits_at_once_leaving_the_unconfirmed_in_the_spool(
    process_env: dict[str, str], tmp_path: Path, sim: ServerThread, amqp_url: str,
) -> None:
    """A drain stuck behind a stalled broker (deadline 10 min); a second signal ends it now."""
    count = 200
    host_port = amqp_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    drain_timeout = 600.0
    with TcpProxy(host, int(port)) as proxy:
        env = {**process_env,
               "BRIDGE_AMQP__URL": amqp_url.replace(host_port, f"127.0.0.1:{proxy.port}"),
               "BRIDGE_SHUTDOWN__DRAIN_TIMEOUT": str(drain_timeout)}
        bridge = BridgeProcess(env, tmp_path, tmp_path / "bridge.log").start()
        try:
            await asyncio.to_thread(bridge.wait_ready)
            proxy.pause()  # nothing is confirmed from now on
            events = [Raised("ingres", "order_created", f"stuck #{i}".encode())
                      for i in range(count)]
            await asyncio.to_thread(raise_all, sim.target(), events)
            assert await asyncio.to_thread(
                wait_until, lambda: bridge.counter("events_caught") >= count, 60)
            confirmed_before = bridge.counter("events_confirmed")
            bridge.send(signal.SIGTERM)
            assert await asyncio.to_thread(
                wait_until, lambda: bridge.logged("shutdown: draining"), 30), bridge.tail()
            bridge.send(signal.SIGINT)
            # Far within the drain deadline: the second signal did not wait for it.
            status = await asyncio.to_thread(bridge.wait, drain_timeout / 10)
        finally:
            bridge.close()
    assert status == 128 + signal.SIGINT, bridge.tail()
    assert bridge.logged("received SIGINT again: exiting now")
    left = Spool.open(tmp_path / "spool.db")
    try:
        assert left.depth == count - confirmed_before
    finally:
        left.close()


@pytest.mark.parametrize(
    ("password", "database", "code"),
    [("wrong", "demodb", "E_GC000B"), ("right", "nosuchdb", "E_US0010")],
)
def test_ingres_refusing_the_settings_stops_run_with_status_3(
    process_env: dict[str, str], tmp_path: Path, password: str, database: str, code: str,
) -> None:
    """Rejected credentials or an unknown database: retrying cannot help, so `run` stops."""
    with ServerThread(SimServer(users={"ingres": "right"}, databases=["demodb"])) as guarded:
        guarded.create_event("ingres", "order_created")
        env = {**process_env, "BRIDGE_HTTP__LISTEN": "off",
               "BRIDGE_INGRES__EVENTS": "order_created",
               "BRIDGE_INGRES__TARGET": guarded.target(password=password, database=database)}
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "run"], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert done.returncode == 3, done.stderr
    assert code in done.stderr
    assert f",{password}]" not in done.stderr  # the target is shown masked


def test_rabbitmq_refusing_the_credentials_stops_run_with_status_4(
    process_env: dict[str, str], tmp_path: Path, amqp_url: str,
) -> None:
    user_info = amqp_url.split("//", 1)[1].split("@", 1)[0]
    env = {**process_env, "BRIDGE_HTTP__LISTEN": "off",
           "BRIDGE_AMQP__URL": amqp_url.replace(user_info, "guest:not-the-password")}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "run"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 4, done.stderr
    assert "not-the-password" not in done.stderr


async def test_unreachable_ingres_at_start_is_retried_and_named_by_readyz(
    process_env: dict[str, str], tmp_path: Path,
) -> None:
    """No crash loop: the bridge stays up, not ready, saying why, until it is stopped."""
    closed = free_port()
    env = {**process_env, "BRIDGE_INGRES__TARGET": f"@127.0.0.1,tcp_ip,{closed}[ingres,x]::demodb"}
    bridge = BridgeProcess(env, tmp_path, tmp_path / "bridge.log").start()
    try:
        assert await asyncio.to_thread(
            wait_until, lambda: "not reachable" in bridge.readyz()[1], 60), bridge.tail()
        status, body = bridge.readyz()
        assert status == 503
        assert bridge.running()
        lines = bridge.log.read_text(errors="replace").splitlines()
        assert any("WARNING" in line and "not reachable" in line for line in lines), lines
        assert "not reachable" in json.loads(body)["components"]["ingres"]["reason"]
        assert await _stopped(bridge) == 0, bridge.tail()
    finally:
        bridge.close()
