"""The command line as an operator meets it: demo, check-config, bad settings."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aio_pika
import aiormq.exceptions
import pytest

from bridge.demo import run_demo
from bridge.settings import load_settings
from bridge.sim.server import ServerThread

pytestmark = pytest.mark.amqp


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> \
        subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], env=env, cwd=cwd, capture_output=True,
        text=True, timeout=timeout, check=False,
    )


@pytest.fixture
def env(tmp_path: Path, amqp_url: str) -> dict[str, str]:
    """A clean environment: no BRIDGE_ settings but the broker, secrets dir elsewhere."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    clean["BRIDGE_AMQP__URL"] = amqp_url
    clean["BRIDGE_SECRETS_DIR"] = str(tmp_path / "no-secrets")
    return clean


def test_demo_delivers_every_sample_event(env: dict[str, str], tmp_path: Path) -> None:
    result = _run(["demo"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 of 4 events received." in result.stdout
    assert "ingres.price%23changed" in result.stdout


def test_demo_uses_the_library_in_ii_system_without_a_compiler(
    env: dict[str, str], tmp_path: Path
) -> None:
    """As in the demo image: $II_SYSTEM holds the simulator's library, no compiler is there."""
    no_tools = tmp_path / "empty-bin"
    no_tools.mkdir()
    env["PATH"] = str(no_tools)
    env.pop("CC", None)
    env["II_SYSTEM"] = os.environ["II_SYSTEM"]  # the session's simulator library
    result = _run(["demo"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 of 4 events received." in result.stdout


async def test_demo_that_cannot_get_a_library_leaves_no_connection_open(
    amqp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    opened: list[aio_pika.abc.AbstractConnection] = []
    real_connect = aio_pika.connect

    async def recording_connect(*args: Any, **kwargs: Any) -> aio_pika.abc.AbstractConnection:
        connection: aio_pika.abc.AbstractConnection = await real_connect(*args, **kwargs)
        opened.append(connection)
        return connection

    monkeypatch.setattr(aio_pika, "connect", recording_connect)
    monkeypatch.delenv("II_SYSTEM")  # restored afterwards: pyngres is loaded from it
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "no-secrets"))
    monkeypatch.chdir(tmp_path)
    status = await run_demo(load_settings({"amqp": {"url": amqp_url}}))
    assert status == 1
    assert "cannot build the OpenAPI simulator" in capsys.readouterr().out
    assert all(connection.is_closed for connection in opened)


def test_demo_without_a_broker_says_how_to_start_one(
    env: dict[str, str], tmp_path: Path
) -> None:
    env["BRIDGE_AMQP__URL"] = "amqp://guest:s3cret@127.0.0.1:1/"
    result = _run(["demo"], env, tmp_path)
    assert result.returncode == 1
    assert "No RabbitMQ answers" in result.stdout
    assert "rabbitmq-server" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr


def test_check_config_reports_each_side(env: dict[str, str], tmp_path: Path) -> None:
    with ServerThread() as sim:
        sim.create_event("ingres", "order_created")
        env["BRIDGE_INGRES__TARGET"] = sim.target(password="t0psecret")
        env["BRIDGE_INGRES__EVENTS"] = "order_created"
        ok = _run(["check-config"], env, tmp_path)
        env["BRIDGE_INGRES__EVENTS"] = "order_created,missing_event"
        ingres_bad = _run(["check-config"], env, tmp_path)
        env["BRIDGE_AMQP__URL"] = "amqp://guest:guest@127.0.0.1:1/"
        both_bad = _run(["check-config"], env, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Ingres: OK" in ok.stdout
    assert "RabbitMQ: OK" in ok.stdout
    assert "t0psecret" not in ok.stdout + ok.stderr
    assert ingres_bad.returncode == 3
    assert "missing_event" in ingres_bad.stderr
    assert both_bad.returncode == 5


def test_bad_settings_exit_2_with_one_line_per_problem(
    env: dict[str, str], tmp_path: Path
) -> None:
    env["BRIDGE_AMQP__EXCHANGE_TYPE"] = "fnout"
    env["BRIDGE_AMQP__URL"] = "http://guest:pw@host/"
    result = _run(["run"], env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any("BRIDGE_AMQP__EXCHANGE_TYPE" in line for line in lines)
    assert any("BRIDGE_AMQP__URL" in line for line in lines)
    assert all(line.startswith("dbevent-bridge: ") for line in lines)
    assert "guest:pw" not in result.stderr


def test_run_without_target_or_events_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    result = _run(["run"], env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "BRIDGE_INGRES__TARGET" in lines[0]
    assert "BRIDGE_INGRES__EVENTS" in lines[1]


def test_check_config_needs_what_run_needs(env: dict[str, str], tmp_path: Path) -> None:
    result = _run(["check-config"], env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "BRIDGE_INGRES__TARGET" in lines[0]
    assert "BRIDGE_INGRES__EVENTS" in lines[1]
    assert "RabbitMQ" not in result.stdout


async def test_check_config_looks_the_exchange_up_without_declaring_it(
    env: dict[str, str], tmp_path: Path, unique_name: str,
    amqp_connection: aio_pika.abc.AbstractConnection,
) -> None:
    with ServerThread() as sim:
        sim.create_event("ingres", "order_created")
        env["BRIDGE_INGRES__TARGET"] = sim.target()
        env["BRIDGE_INGRES__EVENTS"] = "order_created"
        env["BRIDGE_AMQP__EXCHANGE"] = unique_name
        declares = await asyncio.to_thread(_run, ["check-config"], env, tmp_path)
        env["BRIDGE_AMQP__DECLARE_EXCHANGE"] = "false"
        must_exist = await asyncio.to_thread(_run, ["check-config"], env, tmp_path)
    assert declares.returncode == 0, declares.stdout + declares.stderr
    assert f"RabbitMQ: OK (exchange '{unique_name}' does not exist yet; run declares it)" \
        in declares.stdout
    assert must_exist.returncode == 4
    assert "does not exist" in must_exist.stderr
    channel = await amqp_connection.channel()
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
        await channel.get_exchange(unique_name, ensure=True)  # still not declared


def test_unknown_bridge_variable_in_the_environment_exits_2(
    env: dict[str, str], tmp_path: Path
) -> None:
    env["BRIDGE_AMQP_URL"] = "amqp://guest:t0psecret@elsewhere:5672/"
    result = _run(["check-config"], env, tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "dbevent-bridge: BRIDGE_AMQP_URL (amqp_url): unknown setting; did you mean amqp.url "
        "(BRIDGE_AMQP__URL)?\n"
    )
    assert "RabbitMQ" not in result.stdout


def test_run_without_ii_system_says_so_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    env.pop("II_SYSTEM", None)
    env["BRIDGE_INGRES__TARGET"] = "mydb"
    env["BRIDGE_INGRES__EVENTS"] = "order_created"
    result = _run(["run"], env, tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("dbevent-bridge: II_SYSTEM is not set: ")
    assert result.stderr.count("\n") == 1


def test_http_port_in_use_names_the_setting(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as taken, ServerThread() as sim:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        env["BRIDGE_INGRES__TARGET"] = sim.target()
        env["BRIDGE_INGRES__EVENTS"] = "order_created"
        env["BRIDGE_HTTP__LISTEN"] = listen
        env["BRIDGE_SPOOL__PATH"] = str(tmp_path / "spool.db")
        env["BRIDGE_LOG__FORMAT"] = "console"
        result = _run(["run"], env, tmp_path)
    assert result.returncode == 1
    assert (f"BRIDGE_HTTP__LISTEN (http.listen): cannot listen on {listen}: "
            "Address already in use") in result.stderr
    assert "Traceback" not in result.stderr
