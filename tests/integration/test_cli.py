"""The command line as an operator meets it: demo, check-config, bad settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aio_pika
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
    assert "ingres.price%20changed" in result.stdout


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
