"""The wiring's pure helpers (what a target names, the CloudEvents source of its events)
and the catcher-to-loop hand-over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import cast

import pytest

from bridge.app import _Lane, _LoopSink, cloudevents_sources, source_of
from bridge.backlog import Backlog
from bridge.event import CaughtEvent
from bridge.metrics import Metrics
from bridge.settings import database_of
from tests.polling import eventually


@pytest.mark.parametrize(
    ("target", "source"),
    [
        ("salesdb", "ingres:///salesdb"),
        ("prodnode::salesdb", "ingres://prodnode/salesdb"),
        ("prodnode::salesdb/ingres", "ingres://prodnode/salesdb"),
        ("@db1.example.com,tcp_ip,21064[bridge,s3cret]::salesdb",
         "ingres://db1.example.com:21064/salesdb"),
        ("@db1.example.com,tcp_ip,II::salesdb", "ingres://db1.example.com/salesdb"),
        ("prodnode::my db", "ingres://prodnode/my%20db"),
    ],
)
def test_source_names_the_server_and_database_never_the_password(
    target: str, source: str
) -> None:
    assert source_of(target) == source
    assert "s3cret" not in source_of(target)


def test_sources_by_database() -> None:
    targets = ["a::sales", "@b,tcp_ip,1[u,p]::stock"]
    assert cloudevents_sources(targets) == {
        "sales": "ingres://a/sales", "stock": "ingres://b:1/stock"}
    assert [database_of(t) for t in targets] == ["sales", "stock"]


class _Recorder:
    """Stands in for the lane behind a _LoopSink: records what reaches the loop, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def accept(self, events: list[CaughtEvent]) -> None:
        self.calls.append(("accept", [e.name for e in events]))

    def on_proof(self, moment: datetime) -> None:
        self.calls.append(("proof", moment))


def _sink(recorder: _Recorder) -> _LoopSink:
    backlog = Backlog(Metrics(), None)
    return _LoopSink(cast(_Lane, recorder), asyncio.get_running_loop(), backlog)


def _event(name: str) -> CaughtEvent:
    return CaughtEvent("db", "ingres", name, datetime(2026, 1, 1, tzinfo=UTC), None)


async def test_an_event_after_a_quiet_moment_is_handed_over_at_once() -> None:
    recorder = _Recorder()
    sink = _sink(recorder)
    sink.event_caught(_event("first"))
    await asyncio.sleep(0)  # one loop turn: no hand-over interval to wait out
    assert recorder.calls == [("accept", ["first"])]


async def test_events_caught_meanwhile_go_together_and_reports_come_after_them() -> None:
    recorder = _Recorder()
    sink = _sink(recorder)
    sink.event_caught(_event("a"))
    await asyncio.sleep(0)
    # Within the hand-over interval: these wait for the next hand-over, unless a
    # report comes first; then they are handed over before it, in catch order.
    sink.event_caught(_event("b"))
    sink.event_caught(_event("c"))
    moment = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    sink.session_proved(moment)
    assert await eventually(lambda: len(recorder.calls) == 3, within=5.0)
    assert recorder.calls == [("accept", ["a"]), ("accept", ["b", "c"]), ("proof", moment)]
