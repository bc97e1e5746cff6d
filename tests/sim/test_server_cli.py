"""The simulator's command line: `serve` as a subprocess, `ctl`, `ii-system`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.sim import cli
from bridge.sim.server import ServerThread
from bridge.sim.wire import SimClient
from tests.sim.serve import sim_serve


@pytest.fixture
def thread_server() -> Iterator[ServerThread]:
    with ServerThread() as st:
        yield st


async def test_serve_subprocess_prints_listening_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"alice": "secret"}))
    with sim_serve("--database", "demodb", "--dba", "alice", "--users", str(users)) as (proc, port):
        client = await SimClient.connect("127.0.0.1", port, "alice", "secret", "demodb")
        result = await client.ok("select dbmsinfo('dba')")
        assert result.rows == [[b"alice"]]
        await client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_serve_subprocess_exits_0_on_sigint() -> None:
    with sim_serve() as (proc, _):
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_ctl_commands(thread_server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    server = f"127.0.0.1:{thread_server.port}"
    assert cli.main(["ctl", "--server", server, "stats"]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"] == 0
    assert cli.main(["ctl", "--server", server, "delay", "25"]) == 0
    assert thread_server.stats()["delay_ms"] == 25
    assert cli.main(["ctl", "--server", server, "clock", "-1.5"]) == 0
    assert thread_server.stats()["clock_offset"] == -1.5
    thread_server.set_clock_offset(0)
    assert cli.main(["ctl", "--server", server, "drop-sessions"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"ok": True, "dropped": 0}
    assert cli.main(["ctl", "--server", server, "refuse", "0"]) == 0
    assert cli.main(["ctl", "--server", server, "restart", "0"]) == 0


def test_ctl_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    with ServerThread() as st:
        port = st.port
    assert cli.main(["ctl", "--server", f"127.0.0.1:{port}", "stats"]) == 1
    assert "127.0.0.1" in capsys.readouterr().err


def _fake_build(monkeypatch: pytest.MonkeyPatch, result: Path | None) -> None:
    module = types.ModuleType("bridge.sim.build")

    class BuildError(Exception):
        pass

    def ensure_ii_system() -> Path:
        if result is None:
            raise BuildError("no C compiler")
        return result

    module.BuildError = BuildError  # type: ignore[attr-defined]
    module.ensure_ii_system = ensure_ii_system  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bridge.sim.build", module)


def test_ii_system_prints_the_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _fake_build(monkeypatch, tmp_path)
    assert cli.main(["ii-system"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path)


def test_ii_system_reports_a_build_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_build(monkeypatch, None)
    assert cli.main(["ii-system"]) == 1
    assert "no C compiler" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["serve", "--listen", "nowhere"], "--listen: expected HOST:PORT, got 'nowhere'"),
        (["serve", "--listen", "127.0.0.1:70000"], "--listen: port 70000 is out of range"),
        (["serve", "--users", "/no/such/users.json"], "--users /no/such/users.json: No such file"),
        (["ctl", "--server", "x", "stats"], "--server: expected HOST:PORT, got 'x'"),
    ],
)
def test_bad_arguments_fail_with_one_line(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(args, prog="dbevent-bridge sim") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"dbevent-bridge sim {args[0]}: {expected}"), err


def test_serve_on_a_port_in_use_names_the_option(
    thread_server: ServerThread, tmp_path: Path
) -> None:
    users = tmp_path / "users.json"
    users.write_text('{"ingres": "pw"}')
    taken = f"127.0.0.1:{thread_server.port}"
    result = subprocess.run(
        [sys.executable, "-m", "bridge.sim", "serve", "--listen", taken, "--users", str(users)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"python -m bridge.sim serve: --listen {taken}: cannot listen: Address already in use\n"
    )
