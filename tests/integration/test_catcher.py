"""The catcher against the simulator: which connect failures stop start-up, which are retried."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from datetime import datetime

import pytest

from bridge.catcher import Catcher, CatcherStartupError
from bridge.event import CaughtEvent, EventIdentities
from bridge.settings import IngresSettings, IngresTarget
from bridge.sim.server import ServerThread, SimServer
from tests.polling import wait_until


class _Sink:
    """Records what the catcher reports (called on the catcher thread)."""

    def __init__(self) -> None:
        self.failed = threading.Event()
        self.error: BaseException | None = None

    def event_caught(self, event: CaughtEvent) -> None:
        pass

    def session_up(self, catching_from: datetime, registered_by: datetime,
                   reconnected: bool) -> None:
        pass

    def session_down(self, reason: str) -> None:
        pass

    def session_unavailable(self, reason: str) -> None:
        pass

    def session_proved(self, moment: datetime) -> None:
        pass

    def catcher_failed(self, error: BaseException) -> None:
        self.error = error
        self.failed.set()


@pytest.fixture
def guarded() -> Iterator[ServerThread]:
    """A simulator that checks passwords (ingres/right) and knows one database, demodb."""
    with ServerThread(SimServer(users={"ingres": "right"}, databases=["demodb"])) as server:
        server.create_event("ingres", "order_created")
        yield server


def _catcher(target: str) -> tuple[Catcher, _Sink]:
    config = IngresSettings(target=IngresTarget(target), events=["order_created"],
                            reconnect_backoff_min=0.05, reconnect_backoff_max=0.2,
                            operation_timeout=10.0)
    sink = _Sink()
    return Catcher(config, sink, EventIdentities()), sink


@pytest.mark.parametrize(
    ("password", "database", "code", "meaning"),
    [
        ("wrong", "demodb", "E_GC000B", "wrong user name or password"),
        ("right", "nosuchdb", "E_US0010", "the database does not exist"),
    ],
)
def test_rejected_settings_stop_start_up_with_one_line(
    guarded: ServerThread, password: str, database: str, code: str, meaning: str
) -> None:
    catcher, sink = _catcher(guarded.target(password=password, database=database))
    catcher.start()
    try:
        with pytest.raises(CatcherStartupError) as caught:
            catcher.wait_registered(60.0)
    finally:
        catcher.stop()
        assert wait_until(lambda: not catcher.alive, 30.0)
    message = str(caught.value)
    assert code in message
    assert meaning in message
    assert "\n" not in message
    assert sink.error is caught.value


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_retried_until_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = _closed_port()
    catcher, sink = _catcher(f"@127.0.0.1,tcp_ip,{port}[ingres,right]::demodb")
    caplog.set_level(logging.WARNING, logger="bridge.catcher")
    catcher.start()
    try:
        assert wait_until(
            lambda: any("not reachable" in r.getMessage() for r in caplog.records), 60
        ), "the catcher never said it retries"
        assert not sink.failed.is_set(), sink.error
        with ServerThread(SimServer(port=port)) as server:
            server.create_event("ingres", "order_created")
            assert catcher.wait_registered(60.0)
    finally:
        catcher.stop()
        assert wait_until(lambda: not catcher.alive, 30.0)
    assert not sink.failed.is_set()
