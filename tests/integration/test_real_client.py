"""The bridge's own paths through Actian's real OpenAPI library (opt-in: real_client).

Every test runs the real library in a child process (pyngres loads one library
per process; this one has the simulator's): `Session`, `check-config`, `run`
and `doctor` against a closed port, a rejected login, a client without time
zone, and the simulator, which answers the real library in Ingres's own protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aio_pika
import pytest

from bridge.sim.server import ServerThread, SimServer
from tests.faults.process import BridgeProcess, bridge_env, free_port
from tests.integration.conftest import Raised, body_of, raise_all, receive
from tests.polling import wait_until

pytestmark = pytest.mark.real_client

# What Actian's library reports for a closed port (E_CLFE05, then E_AP0001).
UNREACHABLE = "Unable to make outgoing connection"

_SESSION_CHILD = """
import json, sys
from bridge.openapi import OpenAPIError, Session
session = Session(sys.argv[1], timeout_s=30.0)
try:
    session.open()
    print(json.dumps({"connected": True}))
except OpenAPIError as exc:
    print(json.dumps({"operation": exc.operation, "status": exc.status, "text": str(exc),
                      "errors": [[e.sqlstate, e.code, e.message] for e in exc.errors]}))
finally:
    session.close()
"""


def _closed_target() -> str:
    return f"@127.0.0.1,tcp_ip,{free_port()}[ingres,x]::demodb"


def _env(ii_system: Path, tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update({"II_SYSTEM": str(ii_system), "BRIDGE_SECRETS_DIR": str(tmp_path / "none")})
    env.update({f"BRIDGE_{k.upper()}": v for k, v in settings.items()})
    return env


def _bridge(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def _without_time_zone(real: Path, tmp_path: Path) -> Path:
    """A view of the real client whose symbol.tbl lacks II_TIMEZONE_NAME (links, no copy)."""
    view = tmp_path / "no-tz"
    (view / "ingres" / "files").mkdir(parents=True)
    for entry in (real / "ingres").iterdir():
        if entry.name != "files":
            (view / "ingres" / entry.name).symlink_to(entry)
    for entry in (real / "ingres" / "files").iterdir():
        if entry.name != "symbol.tbl":
            (view / "ingres" / "files" / entry.name).symlink_to(entry)
    lines = (real / "ingres" / "files" / "symbol.tbl").read_text().splitlines(keepends=True)
    (view / "ingres" / "files" / "symbol.tbl").write_text(
        "".join(line for line in lines if not line.startswith("II_TIMEZONE_NAME")))
    return view


def test_session_surfaces_the_real_error_for_a_closed_port(
    real_ii_system: Path, tmp_path: Path
) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _SESSION_CHILD, _closed_target()],
        env=_env(real_ii_system, tmp_path), capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["operation"] == "connect"
    assert report["status"] == 5  # FAILURE
    (state1, code1, text1), (state2, code2, _) = report["errors"]
    assert (state1, code1) == ("08004", 0x1FE05)
    assert UNREACHABLE in text1
    assert (state2, code2) == ("08006", 0xC90001)
    assert "E_CLFE05" in report["text"]


@pytest.mark.amqp
def test_check_config_exits_3_naming_the_real_error(
    real_ii_system: Path, tmp_path: Path, amqp_url: str
) -> None:
    env = _env(real_ii_system, tmp_path, ingres__target=_closed_target(),
               ingres__events="order_created", amqp__url=amqp_url)
    result = _bridge(["check-config"], env, tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "RabbitMQ: OK" in result.stdout
    failed = [line for line in result.stderr.splitlines() if line.startswith("Ingres: FAILED")]
    assert len(failed) == 1, result.stderr
    assert UNREACHABLE in failed[0]
    assert "08004" in failed[0]


@pytest.mark.amqp
def test_run_stays_up_retrying_with_the_real_error_in_its_log(
    real_ii_system: Path, tmp_path: Path, amqp_url: str, unique_name: str
) -> None:
    env = bridge_env(tmp_path, target=_closed_target(), amqp_url=amqp_url,
                     exchange=unique_name, spool=tmp_path / "spool.db",
                     extra={"II_SYSTEM": str(real_ii_system)})
    bridge = BridgeProcess(env, tmp_path, tmp_path / "bridge.log").start()
    try:
        assert wait_until(lambda: bridge.logged(UNREACHABLE) or not bridge.running(), 60), (
            bridge.tail())
        status, body = bridge.readiness()
        assert bridge.running(), bridge.tail()
        assert status == 503
        assert UNREACHABLE in body
        assert bridge.terminate() == 0, bridge.tail()
    finally:
        bridge.close()


def test_doctor_passes_its_client_checks(real_ii_system: Path, tmp_path: Path) -> None:
    result = _bridge(["doctor"], _env(real_ii_system, tmp_path), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1].rstrip(":") for line in lines[:5]] == [
        "II_SYSTEM", "library", "loads", "API", "date"]
    assert all(line.startswith("OK") for line in lines[:5])
    assert lines[5:] == ["SKIP  connect: no ingres.target set"]
    assert "the bridge uses 2" in result.stdout


def test_doctor_and_run_name_a_client_without_time_zone(
    real_ii_system: Path, tmp_path: Path
) -> None:
    view = _without_time_zone(real_ii_system, tmp_path)
    doctor = _bridge(["doctor"], _env(view, tmp_path), tmp_path)
    assert doctor.returncode == 1
    assert "FAIL  API version: IIapi_initialize refused every version" in doctor.stderr
    assert "ingsetenv II_TIMEZONE_NAME" in doctor.stderr

    env = _env(view, tmp_path, ingres__target=_closed_target(), ingres__events="x",
               amqp__url="amqp://guest:guest@127.0.0.1:1/", http__listen="off",
               spool__path=str(tmp_path / "spool.db"), ingres__reconnect_backoff_min="0.05",
               ingres__reconnect_backoff_max="0.1", log__format="console")
    run = _bridge(["run"], env, tmp_path)
    assert run.returncode == 1, run.stderr
    named = run.stderr.count("IIapi_initialize(in_version=2) failed (FAILURE): no error info")
    assert named == 2 + 1  # the two retries logged, then the line it stops with
    assert "giving up after 3 failures in a row" in run.stderr


def test_doctor_connects_and_registers_through_the_real_library(
    real_ii_system: Path, tmp_path: Path
) -> None:
    with ServerThread(SimServer(users={"ingres": "right"}, databases=["demodb"])) as sim:
        sim.create_event("ingres", "order_created")
        good = _bridge(["doctor"], _env(real_ii_system, tmp_path,
                                        ingres__target=sim.target(password="right"),
                                        ingres__events="order_created"), tmp_path)
        refused = _bridge(["doctor"], _env(real_ii_system, tmp_path,
                                           ingres__target=sim.target(password="wrong"),
                                           ingres__events="order_created"), tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "OK    register order_created: registered" in good.stdout
    assert refused.returncode == 1
    assert "FAIL  connect:" in refused.stderr
    assert "E_GC000B" in refused.stderr
    assert "wrong user name or password" in refused.stderr


@pytest.mark.amqp
def test_run_stops_at_once_when_the_real_library_reports_a_rejected_login(
    real_ii_system: Path, tmp_path: Path, amqp_url: str, unique_name: str
) -> None:
    with ServerThread(SimServer(users={"ingres": "right"}, databases=["demodb"])) as sim:
        env = bridge_env(tmp_path, target=sim.target(password="wrong"), amqp_url=amqp_url,
                         exchange=unique_name, spool=tmp_path / "spool.db",
                         extra={"II_SYSTEM": str(real_ii_system)})
        bridge = BridgeProcess(env, tmp_path, tmp_path / "bridge.log").start()
        try:
            status = bridge.wait(120)
        finally:
            bridge.close()
    assert status == 3, bridge.tail()
    assert bridge.logged("E_GC000B")
    assert bridge.logged("wrong user name or password")


@pytest.mark.amqp
async def test_run_catches_and_publishes_through_the_real_library(
    real_ii_system: Path, tmp_path: Path, amqp_url: str, unique_name: str,
    sim: ServerThread, subscriber: aio_pika.abc.AbstractQueue,
) -> None:
    env = bridge_env(tmp_path, target=sim.target(), amqp_url=amqp_url, exchange=unique_name,
                     spool=tmp_path / "spool.db", extra={"II_SYSTEM": str(real_ii_system)})
    bridge = BridgeProcess(env, tmp_path, tmp_path / "bridge.log").start()
    try:
        await asyncio.to_thread(bridge.wait_ready)
        events = [Raised("ingres", "order_created", f"real #{i}".encode()) for i in range(20)]
        await asyncio.to_thread(raise_all, sim.target(), events)
        messages = await receive(subscriber, len(events), within=60)
        assert await asyncio.to_thread(bridge.terminate) == 0, bridge.tail()
    finally:
        bridge.close()
    assert [body_of(m)["text"] for m in messages] == [e.text.decode() for e in events if e.text]
    assert bridge.logged("through OpenAPI version 2")
