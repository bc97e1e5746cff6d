"""The catcher's own decisions, with a scripted session in place of the OpenAPI.

What is retried and how soon, what stops the bridge, what is reported to the
sink and in which order. The catcher against the simulator and Actian's
library: tests/integration/test_catcher.py.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import bridge.catcher as catcher_module
from bridge.catcher import (
    Catcher,
    CatcherGaveUpError,
    CatcherStartupError,
)
from bridge.event import CaughtEvent, DBEvent, EventIdentities, stable_message_id
from bridge.openapi import ApiError, OpenAPIError, SessionTimeoutError
from bridge.settings import IngresSettings, IngresTarget
from tests.polling import wait_until

RAISED = datetime(2026, 11, 25, 8, 0, 0, tzinfo=UTC)
# The scripted DBMS clock: its n-th reading (probe) is DBMS_T0 + n seconds.
DBMS_T0 = datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC)
# As the real client reports them (codes: see bridge/ingres_errors.py).
UNREACHABLE = OpenAPIError(
    "connect", 5, [ApiError(1, "08004", 0x1FE05, "Unable to make outgoing connection.")])
ANSWERED = OpenAPIError("connect", 5, [ApiError(1, "50000", 0x6020C, "Server busy.")])
REJECTED = OpenAPIError("connect", 5, [ApiError(1, "50000", 0xC000B, "Login failed.")])
UNEXPLAINED = OpenAPIError("connect", 5, [])
LOST = OpenAPIError(
    "get event", 5, [ApiError(1, "08006", 0xC90001, "The connection has been aborted.")])
NO_SUCH_EVENT = OpenAPIError("register", 5, [ApiError(1, "42500", 0x1, "No such event.")])


def raw(text: bytes = b"x") -> DBEvent:
    return DBEvent("demodb", "ingres", "a", RAISED, text)


# --- the thread, over scripted sessions ---------------------------------------------------


class ScriptedSession:
    """Plays the OpenAPI session: events (or an error) per wait, then idle waits."""

    def __init__(self, events: list[DBEvent | OpenAPIError] | None = None, *,
                 register_error: OpenAPIError | None = None,
                 probe_error: OpenAPIError | None = None) -> None:
        self.events = list(events or [])
        self.register_error = register_error
        self.probe_error = probe_error
        self.registered: list[str] = []
        self.probes = 0
        self.closed = threading.Event()
        self._idle = threading.Event()  # never set: an idle wait lasts its timeout

    def register(self, event: str) -> None:
        self.registered.append(event)
        if self.register_error is not None:
            raise self.register_error

    def next_event(self, timeout_ms: int) -> DBEvent | None:
        if not self.events:
            self._idle.wait(timeout_ms / 1000)  # as IIapi_getEvent blocks, up to its timeout
            return None
        item = self.events.pop(0)
        if isinstance(item, OpenAPIError):
            raise item
        return item

    def probe(self, timeout_s: float) -> datetime:
        self.probes += 1
        # The two readings around the registration answer; idle probes may fail.
        if self.probe_error is not None and self.probes > 2:
            raise self.probe_error
        return DBMS_T0 + timedelta(seconds=self.probes)

    def close(self) -> None:
        self.closed.set()


class RecordingSink:
    """What the catcher reported, in order (it reports from its own thread)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.failed: BaseException | None = None
        self.up_at: list[tuple[datetime, datetime]] = []  # session_up's DBMS times
        self._lock = threading.Lock()

    def _add(self, kind: str, value: Any) -> None:
        with self._lock:
            self.calls.append((kind, value))

    def of(self, kind: str) -> list[Any]:
        with self._lock:
            return [value for k, value in self.calls if k == kind]

    def kinds(self) -> list[str]:
        with self._lock:
            return [k for k, _ in self.calls]

    def event_caught(self, event: CaughtEvent) -> None:
        self._add("caught", event)

    def session_up(self, catching_from: datetime, registered_by: datetime,
                   reconnected: bool) -> None:
        self._add("up", reconnected)
        with self._lock:
            self.up_at.append((catching_from, registered_by))

    def session_down(self, reason: str) -> None:
        self._add("down", reason)

    def session_unavailable(self, reason: str) -> None:
        self._add("unavailable", reason)

    def session_proved(self, moment: datetime) -> None:
        self._add("proved", moment)

    def catcher_failed(self, error: BaseException) -> None:
        self.failed = error
        self._add("failed", error)


Script = list[ScriptedSession | OpenAPIError]


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    """What each attempt to open a session gets, in order; then sessions that stay idle."""
    plays: Script = []

    def open_session(ingres: IngresSettings) -> ScriptedSession:
        item = plays.pop(0) if plays else ScriptedSession()
        if isinstance(item, OpenAPIError):
            raise item
        return item

    monkeypatch.setattr(catcher_module, "_open_session", open_session)
    return plays


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def catcher(sink: RecordingSink) -> Iterator[Catcher]:
    config = IngresSettings(
        target=IngresTarget("demodb"), events=["a", "b"], get_event_timeout=0.01,
        idle_probe_interval=60.0, reconnect_backoff_min=0.01, reconnect_backoff_max=0.02,
    )
    started = Catcher(config, sink, EventIdentities())
    yield started
    started.stop()
    assert wait_until(lambda: not started.alive, 10)


def test_every_event_is_registered_and_each_catch_handed_on_with_its_stable_id(
    script: Script, sink: RecordingSink, catcher: Catcher
) -> None:
    session = ScriptedSession([raw(), raw(), raw(b"y")])
    script.append(session)
    catcher.start()
    assert catcher.wait_registered(10)
    assert session.registered == ["a", "b"]
    assert wait_until(lambda: len(sink.of("caught")) == 3, 10)
    ids = [e.message_id for e in sink.of("caught")]
    # Two identical events of one second are told apart by their ordinal.
    assert ids == [stable_message_id("demodb", "ingres", "a", RAISED, b"x", 0),
                   stable_message_id("demodb", "ingres", "a", RAISED, b"x", 1),
                   stable_message_id("demodb", "ingres", "a", RAISED, b"y", 0)]
    assert sink.kinds()[:1] == ["up"]
    assert sink.of("up") == [False]


def test_an_idle_session_is_probed_and_the_probe_proves_what_came_before(
    script: Script, sink: RecordingSink
) -> None:
    session = ScriptedSession([raw()])
    script.append(session)
    config = IngresSettings(target=IngresTarget("demodb"), events=["a"], get_event_timeout=0.01,
                            idle_probe_interval=0.05)
    catcher = Catcher(config, sink, EventIdentities())
    catcher.start()
    try:
        assert wait_until(lambda: len(sink.of("proved")) >= 2, 10)
    finally:
        catcher.stop()
        assert wait_until(lambda: not catcher.alive, 10)
    assert session.probes >= 2
    kinds = sink.kinds()
    assert kinds.index("caught") < kinds.index("proved")  # reported after the events
    # DBMS time, read around the registration and by each answered probe.
    assert sink.up_at == [(DBMS_T0 + timedelta(seconds=1), DBMS_T0 + timedelta(seconds=3))]
    proofs = sink.of("proved")
    assert proofs[:2] == [DBMS_T0 + timedelta(seconds=3), DBMS_T0 + timedelta(seconds=4)]
    assert session.closed.is_set()


def test_a_lost_session_is_reported_closed_and_opened_again(
    script: Script, sink: RecordingSink, catcher: Catcher
) -> None:
    first = ScriptedSession([raw(), LOST])
    second = ScriptedSession([raw(b"after")])
    script.extend([first, second])
    catcher.start()
    assert wait_until(lambda: len(sink.of("caught")) == 2, 10)
    assert first.closed.is_set()
    assert sink.of("up") == [False, True]
    (reason,) = sink.of("down")
    assert "connection has been aborted" in reason
    assert sink.kinds()[:4] == ["up", "caught", "down", "up"]
    assert sink.failed is None


def test_a_probe_that_fails_loses_the_session(
    script: Script, sink: RecordingSink
) -> None:
    timed_out = SessionTimeoutError("probe", 5, [])
    script.append(ScriptedSession(probe_error=timed_out))
    config = IngresSettings(target=IngresTarget("demodb"), events=["a"], get_event_timeout=0.01,
                            idle_probe_interval=0.02,
                            reconnect_backoff_min=0.01, reconnect_backoff_max=0.02)
    catcher = Catcher(config, sink, EventIdentities())
    catcher.start()
    try:
        assert wait_until(lambda: sink.of("up") == [False, True], 10)
    finally:
        catcher.stop()
        assert wait_until(lambda: not catcher.alive, 10)
    assert len(sink.of("down")) == 1
    assert sink.failed is None


def test_a_missing_event_is_named_and_retried_not_fatal(
    script: Script, sink: RecordingSink, catcher: Catcher
) -> None:
    refused = ScriptedSession(register_error=NO_SUCH_EVENT)
    script.extend([refused, ScriptedSession()])
    catcher.start()
    assert catcher.wait_registered(10)
    (reason,) = sink.of("unavailable")
    assert reason.startswith("DBEvent a cannot be registered (it does not exist, or a "
                             "privilege is missing)")
    assert refused.closed.is_set()


def test_rejected_settings_stop_start_up(
    script: Script, sink: RecordingSink, catcher: Catcher
) -> None:
    script.append(REJECTED)
    catcher.start()
    with pytest.raises(CatcherStartupError, match="wrong user name or password"):
        catcher.wait_registered(10)
    assert isinstance(sink.failed, CatcherStartupError)


def test_rejected_settings_after_the_first_session_are_retried(
    script: Script, sink: RecordingSink, catcher: Catcher
) -> None:
    # The operator may be changing the password right now: no exit, keep trying.
    script.extend([ScriptedSession([LOST]), REJECTED, REJECTED, ScriptedSession()])
    catcher.start()
    assert wait_until(lambda: sink.of("up") == [False, True], 10)
    assert len(sink.of("unavailable")) == 2
    assert sink.failed is None


def test_three_unexplained_failures_in_a_row_give_up(
    script: Script, sink: RecordingSink, catcher: Catcher
) -> None:
    script.extend([UNEXPLAINED] * 3)
    catcher.start()
    with pytest.raises(CatcherGaveUpError, match="giving up after 3 failures in a row"):
        catcher.wait_registered(10)
    assert len(sink.of("unavailable")) == 2
    assert sink.failed is not None


def test_an_explained_failure_resets_the_unexplained_count(
    script: Script, sink: RecordingSink, catcher: Catcher
) -> None:
    script.extend([UNEXPLAINED, UNEXPLAINED, ANSWERED, UNEXPLAINED, UNEXPLAINED])
    catcher.start()
    assert catcher.wait_registered(10)
    assert len(sink.of("unavailable")) == 5
    assert sink.failed is None


def test_an_unreachable_server_is_logged_once_while_retried_quickly(
    script: Script, sink: RecordingSink, catcher: Catcher, caplog: pytest.LogCaptureFixture
) -> None:
    script.extend([UNREACHABLE] * 3)
    with caplog.at_level(logging.WARNING, logger="bridge.catcher"):
        catcher.start()
        assert catcher.wait_registered(10)
    reasons = sink.of("unavailable")
    assert len(reasons) == 3
    assert all(r.startswith("Ingres server not reachable:") for r in reasons)
    warnings = [r.getMessage() for r in caplog.records if "not reachable" in r.getMessage()]
    assert len(warnings) == 1
    assert "retrying every 0.2 s until it is" in warnings[0]


def test_stop_ends_the_thread_and_closes_the_session(
    script: Script, catcher: Catcher
) -> None:
    session = ScriptedSession()
    script.append(session)
    catcher.start()
    assert catcher.wait_registered(10)
    catcher.stop()
    assert wait_until(lambda: not catcher.alive, 10)
    assert session.closed.is_set()
    assert not catcher.alive


# --- the reconnect back-off (the waits stamina sleeps, through its public hook) ----------


def _backing_off(sink: RecordingSink, low: float, high: float) -> Catcher:
    config = IngresSettings(target=IngresTarget("demodb"), events=["a"], get_event_timeout=0.01,
                            idle_probe_interval=60.0, reconnect_backoff_min=low,
                            reconnect_backoff_max=high)
    return Catcher(config, sink, EventIdentities())


def _run_until_registered(catcher: Catcher) -> None:
    catcher.start()
    try:
        assert catcher.wait_registered(30)
    finally:
        catcher.stop()
        assert wait_until(lambda: not catcher.alive, 10)


def test_answered_failures_back_off_doubling_up_to_the_maximum(
    script: Script, sink: RecordingSink, retry_waits: list[float], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the most jitter
    script.extend([ANSWERED] * 5)
    _run_until_registered(_backing_off(sink, 0.01, 0.04))
    # 0.01 doubling, plus the most jitter (0.01), never above the maximum.
    assert retry_waits == pytest.approx([0.02, 0.03, 0.04, 0.04, 0.04])
    assert len(sink.of("unavailable")) == 5


def test_jitter_is_at_most_the_first_delay(
    script: Script, sink: RecordingSink, retry_waits: list[float]
) -> None:
    script.extend([ANSWERED] * 4)
    _run_until_registered(_backing_off(sink, 0.01, 1.0))
    assert len(retry_waits) == 4
    for wait, base in zip(retry_waits, [0.01, 0.02, 0.04, 0.08], strict=True):
        assert base <= wait <= base + 0.01 + 1e-9


def test_an_unreachable_server_is_retried_quickly_and_does_not_grow_the_back_off(
    script: Script, sink: RecordingSink, retry_waits: list[float], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: 0.0)  # no jitter
    script.extend([ANSWERED, ANSWERED, *[UNREACHABLE] * 3, ANSWERED])
    _run_until_registered(_backing_off(sink, 0.01, 10.0))
    # Refused connects every 0.2 s; the third answered failure waits the third
    # step (0.04), not a step counted over the refused attempts too (0.16).
    assert retry_waits == pytest.approx([0.01, 0.02, 0.2, 0.2, 0.2, 0.04])


@pytest.mark.parametrize("failure", [ANSWERED, UNREACHABLE], ids=["answered", "unreachable"])
def test_a_stop_request_ends_the_wait_for_the_next_attempt_at_once(
    script: Script, sink: RecordingSink, failure: OpenAPIError
) -> None:
    # A wait of a minute (answered) or endless quick retries (unreachable): the
    # stop must not wait for either to end.
    script.extend([failure] * 1000)
    catcher = _backing_off(sink, 60.0, 60.0)
    catcher.start()
    try:
        assert wait_until(lambda: len(sink.of("unavailable")) >= 1, 10)
    finally:
        catcher.stop()
        assert wait_until(lambda: not catcher.alive, 10)
    assert sink.of("up") == []
    assert sink.failed is None


def test_a_catcher_takes_one_databases_view(sink: RecordingSink) -> None:
    several = IngresSettings(targets=[IngresTarget("a::sales"), IngresTarget("b::stock")])
    with pytest.raises(ValueError, match="one database"):
        Catcher(several, sink, EventIdentities())
    Catcher(several.per_database()[1], sink, EventIdentities())  # a view of one: accepted
