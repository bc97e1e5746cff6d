"""The catcher: one thread that owns the Ingres session and hands every DBEvent on.

Why a thread, and not the seed example's polling coroutines: the OpenAPI only
makes progress inside `IIapi_wait`, and the seed design polls it (100 ms catch
poll, 50 ms getter, `pyngres.asyncio` spinning on `IIapi_wait(1 ms)`), which
costs up to ~150 ms of latency and a busy core. Here a dedicated thread blocks
in `IIapi_getEvent` with a bounded timeout (ctypes releases the GIL), so an
event is handed over as soon as its bytes arrive, and an idle bridge sleeps.
Every OpenAPI call of the session happens on this thread, through
`bridge.openapi.Session`; the event loop never makes one.

The thread survives the database: a lost session is closed, reopened with
backoff, and every event registered again. What Ingres raised meanwhile is
gone by design (DBEvents are not durable); the catcher reports the window so
that a gap marker can be published.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

import stamina

from bridge.event import CaughtEvent, DBEvent, EventIdentities
from bridge.ingres_errors import Remedy, explain, remedy
from bridge.openapi import API_VERSION, OpenAPIError, Session
from bridge.settings import IngresSettings

log = logging.getLogger("bridge.catcher")


class CatcherSink(Protocol):
    """Where the catcher reports. Called on the catcher thread: must be thread-safe."""

    def event_caught(self, event: CaughtEvent) -> None:
        """A DBEvent was caught (hand it to the event loop, do not block)."""

    def session_up(self, catching_from: datetime, registered_by: datetime,
                   reconnected: bool) -> None:
        """A session is connected and every event is registered.

        Both instants are DBMS time, the clock that stamps events: every event
        raised from `catching_from` on reaches this session while it lives;
        every event raised from `registered_by` on was raised after it had
        registered them all (what an earlier window lost was raised before).
        """

    def session_down(self, reason: str) -> None:
        """The session was lost; events raised from now on are not caught."""

    def session_unavailable(self, reason: str) -> None:
        """An attempt to open and register a session failed; the catcher retries."""

    def session_proved(self, moment: datetime) -> None:
        """The DBMS answered a probe at `moment` (DBMS time).

        Reported after the events caught before the answer, so none that reached
        the session before it is missing.
        """

    def catcher_failed(self, error: BaseException) -> None:
        """The catcher gave up (a startup error, or a bug): the bridge must stop."""


def _no_server_answered(error: Exception) -> bool:
    """True for a connect that no server took (refused, nobody listening)."""
    return isinstance(error, OpenAPIError) and remedy(error) is Remedy.RETRY_SOON


class CatcherGaveUpError(RuntimeError):
    """Retrying cannot help: the bridge must stop; the message says why."""


class CatcherStartupError(CatcherGaveUpError):
    """The first session failed for a reason that retrying cannot fix."""


class RegistrationError(OpenAPIError):
    """An event could not be registered: it does not exist (yet), or a privilege is missing.

    Retried with back-off, never fatal: the operator may be creating the event
    or granting the privilege right now, and an exit would only be a restart
    loop under an orchestrator, each restart a gap.
    """

    def __init__(self, name: str, cause: OpenAPIError) -> None:
        super().__init__(f"register dbevent {name}", cause.status, cause.errors)
        self.event = name


# A failure the client library does not explain (no error information) is
# retried this many times in a row, each logged, and then the catcher gives up:
# it is a refusal by the library (a bad parameter, a broken installation), and
# retrying it for ever would only hide it.
_UNEXPLAINED_LIMIT: Final = 3


# While no server takes the connection (refused, nobody listening), retry this
# often: a refused connect costs the DBMS nothing, and the session is back
# within this delay of the DBMS accepting connections, whatever the outage
# length. Failures the server answered back off instead (each attempt costs it).
_UNREACHABLE_RETRY_S: Final = 0.2
# How often "still unreachable" is logged while those quick retries go on.
_UNREACHABLE_LOG_EVERY_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class _Registered:
    """A session with every event registered, and when, in DBMS time (see `session_up`)."""

    session: Session
    catching_from: datetime
    registered_by: datetime


class Catcher:
    """Runs the Ingres session on its own thread; see the module docstring."""

    def __init__(
        self, ingres: IngresSettings, sink: CatcherSink, identities: EventIdentities
    ) -> None:
        """`ingres` is one database's view of the section: `IngresSettings.database(target)`."""
        if ingres.target is None or ingres.targets:
            raise ValueError("a catcher catches from one database: IngresSettings.database()")
        self._ingres = ingres
        self._sink = sink
        self._identities = identities  # used on the catcher thread only
        self._stop = threading.Event()
        self._lock = threading.Lock()  # orders `stop` against the retries' `_interrupt`
        self._interrupt: Callable[[], object] | None = None  # cancels the retries' wait
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbevent-catcher", daemon=True)
        self._startup_error: BaseException | None = None  # a reason retrying cannot fix
        self._unreachable_logged = -_UNREACHABLE_LOG_EVERY_S  # monotonic time of that warning
        self._crashed: BaseException | None = None  # a bug
        self._unexplained = 0  # consecutive failures without error information

    def start(self) -> None:
        """Start the catcher thread (once)."""
        self._thread.start()

    def wait_registered(self, timeout: float) -> bool:
        """Block until the first session registered every event (True) or the timeout.

        Raises the startup error when Ingres refused the settings (rejected
        credentials, an unknown database): retrying cannot fix those.
        """
        self._started.wait(timeout)
        if self._startup_error is not None:
            raise self._startup_error
        if self._crashed is not None:
            raise RuntimeError("the catcher thread crashed") from self._crashed
        return self._started.is_set()

    def stop(self) -> None:
        """Ask the thread to stop catching; it closes the session within one wait slice.

        A wait before the next connect attempt ends at once.
        """
        with self._lock:
            self._stop.set()
            if self._interrupt is not None:
                self._interrupt()

    @property
    def alive(self) -> bool:
        """True while the thread runs (False before `start`)."""
        return self._thread.is_alive()

    # -- the thread ----------------------------------------------------------

    def _run(self) -> None:
        reconnected = False
        try:
            while not self._stop.is_set():
                registered = self._connect_with_backoff(reconnected)
                if registered is None:
                    return
                session = registered.session
                try:
                    self._catch_until_lost(session)
                finally:
                    session.close()
                reconnected = True
        except CatcherGaveUpError as exc:
            self._startup_error = exc
            self._started.set()
            self._sink.catcher_failed(exc)
        except BaseException as exc:
            log.exception("catcher thread crashed")
            self._crashed = exc
            self._started.set()
            self._sink.catcher_failed(exc)

    def _connect_with_backoff(self, reconnected: bool) -> _Registered | None:
        try:
            # Stamina's synchronous retries sleep in `time.sleep`, which nothing
            # interrupts; its asyncio ones sleep in `asyncio.sleep`, which a
            # cancellation ends at once. So the retries run on a loop of this
            # thread's own, and `stop` cancels them (see `_retrying_open`).
            registered = asyncio.run(self._retrying_open())
        except asyncio.CancelledError:
            return None  # stopped while retrying
        if registered is None:
            return None
        self._sink.session_up(registered.catching_from, registered.registered_by, reconnected)
        self._started.set()
        return registered

    async def _retrying_open(self) -> _Registered | None:
        """Open and register until it works: answered failures back off, see `_polling_open`.

        Stamina counts each back-off step from the context's attempts: each
        attempt here ends in one failure that the server answered, so an outage
        spent refusing connections does not leave the next answered failure
        waiting the maximum. Jitter in proportion to the first delay, so that a
        fleet of bridges does not reconnect in lock-step and a quick setting
        stays quick.
        """
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._stop.is_set():
                return None
            self._interrupt = lambda: loop.call_soon_threadsafe(task.cancel)
        low, high = self._ingres.reconnect_backoff_min, self._ingres.reconnect_backoff_max
        try:
            async for attempt in stamina.retry_context(
                on=OpenAPIError, attempts=None, timeout=None,
                wait_initial=low, wait_max=high, wait_jitter=low,
            ):
                with attempt:
                    try:
                        return await self._polling_open()
                    except OpenAPIError as exc:
                        wait = attempt.next_wait  # stamina adds up to `low` of jitter
                        self._report_retry(exc, wait, min(high, wait + low))
                        raise
        finally:
            with self._lock:
                self._interrupt = None
        raise AssertionError("unreachable: stamina retries until it works or raises")

    async def _polling_open(self) -> _Registered:
        """Open and register; while no server answers, try again every 0.2 s.

        Any other failure is raised, for `_retrying_open` to back off.
        """
        async for attempt in stamina.retry_context(
            on=_no_server_answered, attempts=None, timeout=None,
            wait_initial=_UNREACHABLE_RETRY_S, wait_max=_UNREACHABLE_RETRY_S, wait_jitter=0,
        ):
            with attempt:
                try:
                    return self._open_and_register()
                except OpenAPIError as exc:
                    if _no_server_answered(exc):
                        self._report_retry(exc, _UNREACHABLE_RETRY_S, _UNREACHABLE_RETRY_S)
                    raise
        raise AssertionError("unreachable: stamina retries until it works or raises")

    def _report_retry(self, error: OpenAPIError, wait: float, wait_most: float) -> None:
        """Report a failed attempt: readiness names it, the log says it (WARNING).

        `wait` to `wait_most` is the delay before the next attempt (stamina adds
        the jitter when it sleeps). Nothing is reported once a stop is asked for.
        """
        if self._stop.is_set():
            return
        unreachable = _no_server_answered(error)
        if isinstance(error, RegistrationError):
            reason = (f"DBEvent {error.event} cannot be registered (it does not exist, or a "
                      f"privilege is missing): {error}")
        elif unreachable:
            reason = f"Ingres server not reachable: {error}"
        else:
            reason = "Ingres session not available: " + explain(error)
        self._sink.session_unavailable(reason)
        extra = {"side": "ingres", "wait_seconds": round(wait, 2)}
        if not unreachable:
            self._unreachable_logged = -_UNREACHABLE_LOG_EVERY_S
            span = f"{wait:.1f}" if wait_most - wait < 0.05 else f"{wait:.1f} to {wait_most:.1f}"
            log.warning("%s; retrying in %s s", reason, span, extra=extra)
            return
        # Retried several times a second: say so once, then every so often.
        now = time.monotonic()
        if now - self._unreachable_logged >= _UNREACHABLE_LOG_EVERY_S:
            self._unreachable_logged = now
            log.warning("%s; retrying every %.1f s until it is", reason, wait, extra=extra)

    def _judge(self, exc: OpenAPIError) -> None:
        """Raise where retrying cannot help (bridge.ingres_errors decides what can)."""
        kind = remedy(exc)
        # Settings errors are fatal only before the first session: later the
        # operator may be fixing them while we retry.
        if kind is Remedy.FIX_SETTINGS and not self._started.is_set():
            raise CatcherStartupError(f"cannot connect to Ingres: {explain(exc)}") from exc
        self._unexplained = self._unexplained + 1 if kind is Remedy.UNEXPLAINED else 0
        if self._unexplained >= _UNEXPLAINED_LIMIT:
            raise CatcherGaveUpError(
                f"giving up after {self._unexplained} failures in a row: {explain(exc)}"
            ) from exc

    def _open_and_register(self) -> _Registered:
        """Connect and register every event; a failure is judged (`_judge`), then raised."""
        try:
            return self._registered(_open_session(self._ingres))
        except RegistrationError:
            raise  # retried with back-off whatever it says: the event may be created any time
        except OpenAPIError as exc:
            self._judge(exc)
            raise

    def _registered(self, session: Session) -> _Registered:
        """Register every event on `session`, reading the DBMS clock before and after.

        The reading before is where this session's catching starts (an event
        raised later is stamped no earlier); the one after, rounded down to the
        second (`Session.probe`), plus a second, is later than the moment the last REGISTER
        took effect, so it ends the window that the previous session left.
        `session` is closed when this fails.
        """
        timeout_s = self._ingres.operation_timeout
        try:
            catching_from = session.probe(timeout_s)
            for name in self._ingres.events:
                try:
                    session.register(name)
                except OpenAPIError as exc:
                    if exc.connection_lost:
                        raise
                    raise RegistrationError(name, exc) from exc
            registered_by = session.probe(timeout_s) + timedelta(seconds=1)
        except BaseException:
            session.close()
            raise
        log.info(
            "registered %d DBEvent(s) through OpenAPI version %d: %s", len(self._ingres.events),
            API_VERSION, ", ".join(self._ingres.events), extra={"side": "ingres"},
        )
        return _Registered(session, catching_from, registered_by)

    def _catch_until_lost(self, session: Session) -> None:
        """Catch until the session fails or a stop is asked for.

        An answered idle probe proves more than liveness: the DBMS writes the
        events queued for a session to the connection before the probe's answer,
        so once the next wait for events comes back empty, every event queued
        before the answer has been caught. The answer's DBMS time is reported
        then (after those events); the ledger allows for events that the
        server's event thread had not queued yet (`ingres.delivery_delay_max`).
        """
        last_activity = time.monotonic()
        answered: datetime | None = None
        # The OpenAPI counts this wait in milliseconds.
        timeout_ms = round(self._ingres.get_event_timeout * 1000)
        while not self._stop.is_set():
            try:
                raw = session.next_event(timeout_ms)
                self._unexplained = 0
                if raw is not None:
                    last_activity = time.monotonic()
                    self._sink.event_caught(_to_caught(raw, self._identities))
                    continue
                if answered is not None:
                    self._sink.session_proved(answered)
                    answered = None
                if time.monotonic() - last_activity >= self._ingres.idle_probe_interval:
                    # A half-open session fails or times out here.
                    answered = session.probe(self._ingres.probe_timeout)
                    last_activity = time.monotonic()
            except OpenAPIError as exc:
                log.error("Ingres session lost: %s", exc, extra={"side": "ingres"})
                self._sink.session_down(str(exc))
                self._judge(exc)
                return


def _to_caught(raw: DBEvent, identities: EventIdentities) -> CaughtEvent:
    return CaughtEvent(
        database=raw.database,
        owner=raw.owner,
        name=raw.name,
        raised_at=raw.raised_at,
        text=raw.text,
        message_id=identities.message_id(
            raw.database, raw.owner, raw.name, raw.raised_at, raw.text
        ),
    )


def session_for(ingres: IngresSettings, timeout_s: float | None = None) -> Session:
    """A session (not yet open) on the one database of `ingres` (`IngresSettings.database`).

    `timeout_s` bounds each operation; default: ingres.operation_timeout.
    """
    if ingres.target is None:
        raise ValueError("no Ingres target: set BRIDGE_INGRES__TARGET (ingres.target)")
    password = ingres.password.get_secret_value() if ingres.password is not None else None
    return Session(
        ingres.target.get_secret_value(), ingres.user, password,
        timeout_s=ingres.operation_timeout if timeout_s is None else timeout_s,
    )


def _open_session(ingres: IngresSettings) -> Session:
    session = session_for(ingres)
    try:
        session.open()
    except BaseException:
        session.close()
        raise
    return session
