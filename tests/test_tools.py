"""`sql`, `raise`, `tail` and `spool stats`, as a user runs them: subprocesses, the simulator."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from bridge.settings import parse_event_name
from bridge.sim.server import ServerThread
from bridge.tools import raise_statement
from tests.polling import wait_until

# No broker answers here: none of these commands needs one.
NO_BROKER = "amqp://guest:guest@127.0.0.1:1/"


@pytest.fixture
def sim() -> Iterator[ServerThread]:
    with ServerThread() as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, sim: ServerThread) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    clean.update({
        "BRIDGE_SECRETS_DIR": str(tmp_path / "no-secrets"),
        "BRIDGE_INGRES__TARGET": sim.target(),
        "BRIDGE_AMQP__URL": NO_BROKER,
        "BRIDGE_SPOOL__PATH": str(tmp_path / "spool" / "spool.sqlite3"),
        "BRIDGE_HTTP__LISTEN": "off",
    })
    return clean


def bridge(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def ok(args: list[str], env: dict[str, str], cwd: Path) -> str:
    result = bridge(args, env, cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _wait_for_line(stream: IO[str], needle: str) -> str:
    """Read `stream` until a line holds `needle` (reads block; the test timeout bounds them)."""
    while True:
        line = stream.readline()
        assert line, f"stream ended before {needle!r}"
        if needle in line:
            return line


class Tail:
    """`dbevent-bridge tail` in the background; `lines(n)` reads its JSON lines."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "tail"], env=env, cwd=cwd, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )

    def wait_catching(self) -> None:
        assert self.proc.stderr is not None
        _wait_for_line(self.proc.stderr, "tail: catching since")

    def lines(self, count: int) -> list[dict[str, Any]]:
        assert self.proc.stdout is not None
        return [json.loads(self.proc.stdout.readline()) for _ in range(count)]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def tail_factory(env: dict[str, str], tmp_path: Path) -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.close()


def test_raise_statement_quotes_names_and_text() -> None:
    assert raise_statement(parse_event_name("orders"), None) == "raise dbevent orders"
    assert raise_statement(parse_event_name('ingres."price#changed"'), "it's 5") == (
        "raise dbevent ingres.\"price#changed\" 'it''s 5'"
    )


def test_sql_creates_and_raise_raises_what_tail_prints(
    env: dict[str, str], tmp_path: Path, tail_factory: list[Tail]
) -> None:
    assert ok(["sql", "create dbevent order_created"], env, tmp_path) == "OK\n"
    assert ok(["sql", 'create dbevent "price#changed"'], env, tmp_path) == "OK\n"
    env["BRIDGE_INGRES__EVENTS"] = 'order_created,"price#changed"'
    env["BRIDGE_AMQP__ROUTING_KEY"] = "{database}.{owner}.{name}"
    tail = Tail(env, tmp_path)
    tail_factory.append(tail)
    tail.wait_catching()
    ok(["raise", "order_created", "it's 3 widgets for 東京, naïve"], env, tmp_path)
    ok(["raise", '"price#changed"'], env, tmp_path)
    first, second = tail.lines(2)
    assert tail.stop() == 0
    assert first["routing_key"] == "demodb.ingres.order_created"
    assert first["body"]["text"] == "it's 3 widgets for 東京, naïve"
    assert {k: first["body"][k] for k in ("database", "owner", "name")} == {
        "database": "demodb", "owner": "ingres", "name": "order_created"}
    assert len(first["message_id"]) == 32
    assert second["routing_key"] == "demodb.ingres.price%23changed"
    assert second["body"]["name"] == "price#changed"
    assert second["body"]["text"] is None


def test_sql_error_and_bad_event_name_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    failed = bridge(["sql", "raise dbevent no_such_event"], env, tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.startswith("dbevent-bridge: Ingres: ")
    assert failed.stderr.count("\n") == 1
    bad = bridge(["raise", "bad name!"], env, tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("dbevent-bridge: raise: 'bad name!' is not a valid event name")
    assert bad.stderr.count("\n") == 1


def test_tail_waits_for_an_event_that_does_not_exist_yet(
    env: dict[str, str], tmp_path: Path, tail_factory: list[Tail]
) -> None:
    env["BRIDGE_INGRES__EVENTS"] = "later"
    tail = Tail(env, tmp_path)
    tail_factory.append(tail)
    assert tail.proc.stderr is not None
    warning = _wait_for_line(tail.proc.stderr, "cannot be registered")
    assert "later" in warning
    ok(["sql", "create dbevent later"], env, tmp_path)
    tail.wait_catching()
    ok(["raise", "later", "at last"], env, tmp_path)
    assert tail.lines(1)[0]["body"]["text"] == "at last"
    assert tail.stop() == 0


def test_spool_stats_while_the_bridge_runs(
    env: dict[str, str], tmp_path: Path
) -> None:
    ok(["sql", "create dbevent order_created"], env, tmp_path)
    env["BRIDGE_INGRES__EVENTS"] = "order_created"
    env["BRIDGE_LOG__FORMAT"] = "console"
    run = subprocess.Popen([sys.executable, "-m", "bridge", "run"], env=env, cwd=tmp_path,
                           text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert run.stderr is not None
        _wait_for_line(run.stderr, "registered 1 DBEvent")
        for i in range(3):
            ok(["raise", "order_created", f"order {i}"], env, tmp_path)
        # The broker is away: the events wait in the spool, which stats reads.
        seen: list[dict[str, Any]] = []

        def spooled() -> bool:
            seen.append(json.loads(ok(["spool", "stats"], env, tmp_path)))
            return bool(seen[-1]["events"] == 3)

        wait_until(spooled, 60, every=0.1)
        stats = seen[-1]
        assert run.poll() is None
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
        if run.stderr is not None:
            run.stderr.close()
    assert stats["events"] == 3
    assert stats["gap_markers"] == 0  # a first run: no earlier session, no gap
    assert stats["event_bytes"] > 3 * len("order 0")
    assert stats["file_bytes"] > 0
    assert stats["oldest_raised_at"].endswith("Z")
    assert stats["path"] == env["BRIDGE_SPOOL__PATH"]


def test_spool_stats_without_a_spool(env: dict[str, str], tmp_path: Path) -> None:
    result = bridge(["spool", "stats"], env, tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        f"dbevent-bridge: there is no spool at {env['BRIDGE_SPOOL__PATH']} (BRIDGE_SPOOL__PATH)\n"
    )


@pytest.mark.parametrize("command", [["sql", "commit"], ["raise", "x"], ["tail"]])
def test_commands_need_their_settings(
    command: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    del env["BRIDGE_INGRES__TARGET"]
    result = bridge(command, env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("dbevent-bridge: BRIDGE_INGRES__TARGET (ingres.target)")


def test_a_second_signal_ends_tail_at_once(env: dict[str, str], tmp_path: Path) -> None:
    # A server that takes the connection and never answers: the catcher is stuck in
    # its connect call for operation_timeout, which a stop request cannot shorten.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(60)
        port = silent.getsockname()[1]
        env["BRIDGE_INGRES__TARGET"] = f"@127.0.0.1,tcp_ip,{port}[ingres,x]::demodb"
        env["BRIDGE_INGRES__OPERATION_TIMEOUT"] = "600"
        env["BRIDGE_INGRES__EVENTS"] = "anything"
        tail = Tail(env, tmp_path)
        try:
            connection, _ = silent.accept()  # the catcher's connect is under way
            with connection:
                assert tail.proc.stderr is not None
                tail.proc.send_signal(signal.SIGINT)
                _wait_for_line(tail.proc.stderr, "received SIGINT: stopping")
                tail.proc.send_signal(signal.SIGINT)
                assert tail.proc.wait(30) == 128 + signal.SIGINT
        finally:
            tail.close()
