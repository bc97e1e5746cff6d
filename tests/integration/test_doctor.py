"""`dbevent-bridge doctor` against the simulator's library: every check, passing and failing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.settings import database_of
from bridge.sim.server import ServerThread


def _doctor(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "doctor", *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No BRIDGE_ settings from the caller; II_SYSTEM as the root conftest set it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    clean["BRIDGE_SECRETS_DIR"] = str(tmp_path / "no-secrets")
    return clean


def _lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Check name -> its whole line, from both streams."""
    found = {}
    for line in (result.stdout + result.stderr).splitlines():
        status, rest = line.split(maxsplit=1)
        found[rest.split(":", 1)[0]] = line
        assert status in ("OK", "FAIL", "SKIP"), line
    return found


def test_every_check_passes_and_each_event_registers(env: dict[str, str], tmp_path: Path) -> None:
    with ServerThread() as sim:
        sim.create_event("ingres", "order_created")
        sim.create_event("ingres", "audit")
        env["BRIDGE_INGRES__TARGET"] = sim.target(password="t0psecret")
        env["BRIDGE_INGRES__EVENTS"] = "order_created,audit"
        result = _doctor(env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _lines(result)
    assert list(lines) == ["II_SYSTEM", "library", "loads", "API version", "date formatting",
                           "connect", "register order_created", "register audit"]
    assert all(line.startswith("OK") for line in lines.values())
    assert "the bridge uses 2" in lines["API version"]
    assert str(Path(env["II_SYSTEM"]) / "ingres" / "lib" / "libiiapi.1.so") in lines["library"]
    assert "t0psecret" not in result.stdout + result.stderr


def test_without_a_target_the_client_checks_alone_decide(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = _doctor(env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    connect = _lines(result)["connect"]
    assert connect.startswith("SKIP  connect: no ingres.target set"), connect


def test_with_several_targets_the_first_database_is_checked_as_its_catcher_sees_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    with ServerThread() as sim:
        sim.create_event("ingres", "audit")
        first = sim.target()
        env["BRIDGE_INGRES__TARGETS"] = json.dumps([first, "othernode::stock"])
        env["BRIDGE_INGRES__EVENTS"] = "order_created"  # the first database has its own
        env[f"BRIDGE_INGRES__DATABASES__{database_of(first).upper()}__EVENTS"] = "audit"
        result = _doctor(env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _lines(result)
    assert lines["register audit"].startswith("OK")
    assert "register order_created" not in lines


def test_a_missing_event_fails_its_own_line_with_a_hint(
    env: dict[str, str], tmp_path: Path
) -> None:
    with ServerThread() as sim:
        sim.create_event("ingres", "order_created")
        env["BRIDGE_INGRES__TARGET"] = sim.target()
        env["BRIDGE_INGRES__EVENTS"] = "order_created,no_such_event"
        result = _doctor(env, tmp_path)
    assert result.returncode == 1
    lines = _lines(result)
    assert lines["register order_created"].startswith("OK")
    assert lines["register no_such_event"].startswith("FAIL")
    assert "GRANT REGISTER" in lines["register no_such_event"]


def test_a_rejected_password_says_what_to_fix(env: dict[str, str], tmp_path: Path) -> None:
    from bridge.sim.server import SimServer

    with ServerThread(SimServer(users={"ingres": "right"})) as sim:
        env["BRIDGE_INGRES__TARGET"] = sim.target(password="wrong")
        env["BRIDGE_INGRES__EVENTS"] = "order_created"
        result = _doctor(env, tmp_path)
    assert result.returncode == 1
    line = _lines(result)["connect"]
    assert "E_GC000B" in line
    assert "wrong user name or password" in line


def test_no_ii_system_is_one_line_with_a_hint(env: dict[str, str], tmp_path: Path) -> None:
    del env["II_SYSTEM"]
    result = _doctor(env, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("FAIL  II_SYSTEM: II_SYSTEM is not set")
    assert "mount the Ingres/Actian client" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_library_that_does_not_load_is_reported(env: dict[str, str], tmp_path: Path) -> None:
    library = tmp_path / "ii" / "ingres" / "lib" / "libiiapi.1.so"
    library.parent.mkdir(parents=True)
    library.write_bytes(b"not an ELF file")
    env["II_SYSTEM"] = str(tmp_path / "ii")
    result = _doctor(env, tmp_path)
    assert result.returncode == 1
    lines = _lines(result)
    assert lines["library"].startswith("OK")
    assert lines["loads"].startswith("FAIL  loads: OSError")
    assert "API version" not in lines


@pytest.mark.parametrize(("highest", "passes"), [(8, True), (2, True), (1, False)])
def test_the_bridge_s_version_against_older_runtimes(
    env: dict[str, str], tmp_path: Path, highest: int, passes: bool
) -> None:
    """Ingres 10 accepts up to 8; the bridge needs 2 (BRIDGE_SIM_MAX_API_VERSION: README)."""
    env["BRIDGE_SIM_MAX_API_VERSION"] = str(highest)
    result = _doctor(env, tmp_path)
    line = _lines(result)["API version"]
    assert f"accepts in_version 1..{highest}; the bridge uses 2" in line
    assert line.startswith("OK" if passes else "FAIL")
    assert result.returncode == (0 if passes else 1)
