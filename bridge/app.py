"""The wiring: settings in, catcher → backlog (spool) → publisher, and an orderly shutdown.

`Bridge` is built complete from the settings (what needs neither the loop
nor I/O); `start` opens everything else in one piece (`_Running`), or closes
what it had opened. Shutdown follows uvicorn's shape: named phases, each
logged with what it left, each within its deadline (`_Running.shutdown`):
stop intake, close the Ingres sessions, commit the backlog, drain into
RabbitMQ, close the publisher, close the spool, close HTTP. Anything not
confirmed stays in the spool for the next start.

Gap markers: DBEvents raised while no session of ours is registered are lost
by Ingres's design. After a reconnect, and on a start that follows an earlier
run (the spool remembers until when that run's session was known to have
caught everything), each database's catch ledger (bridge.gaps) puts a gap
marker for the window into the backlog, where it travels like an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

from bridge.address import format_host_port
from bridge.backlog import Backlog
from bridge.catcher import Catcher
from bridge.event import CaughtEvent, EventIdentities, GapMarker
from bridge.exits import ExitStatus, forced_by, status_of
from bridge.gaps import CatchLedger
from bridge.ha import Pair
from bridge.health import Health
from bridge.http import HttpServer, start_http
from bridge.masking import without_credentials
from bridge.metrics import Metrics
from bridge.publisher import Publisher, PublisherStartupError
from bridge.settings import (
    IngresSettings,
    Settings,
    database_of,
    env_name,
)
from bridge.signals import Signals, poll_until, unless_stopped
from bridge.spool import Spool

log = logging.getLogger("bridge.app")

# How often the catch ledger is written while a session is up: one small transaction,
# never per event; a crash widens the next gap by at most this much.
ALIVE_INTERVAL: Final = 2.0
# Most caught events waiting for the loop before the catcher waits (memory bound).
_INBOX_MAX: Final = 256
# At most one hand-over from the catcher to the loop per this many seconds. At a
# steady rate every event would otherwise travel alone: a loop wake-up, a spool
# commit, a socket write to RabbitMQ and a confirm each. Coalescing them costs at
# most this much latency, and none for an event that follows a quiet moment.
_HANDOVER_INTERVAL: Final = 0.002
# How often readiness and the catcher thread are looked at (cheap attribute reads).
_WATCH_INTERVAL: Final = 1.0
# How long the shutdown waits for the catcher thread to close its session.
_CATCHER_STOP_TIMEOUT: Final = 10.0
# How long the shutdown waits for the publisher's (and the lease's) connection to close.
_CLOSE_TIMEOUT: Final = 10.0
# How many of the spool's newest events seed the ordinals of event ids at start.
_ID_TAIL: Final = 10_000


class StartupError(RuntimeError):
    """The bridge cannot start; the message says why, in an operator's words."""


def per_database(settings: Settings) -> list[IngresSettings]:
    """Each database's view of the ingres section, one per catcher (`IngresSettings.database`)."""
    views = settings.ingres.per_database()
    if not views:
        raise StartupError("no Ingres target: set BRIDGE_INGRES__TARGET (ingres.target)")
    return views


def ingres_targets(settings: Settings) -> list[str]:
    """The configured Ingres targets (credentials included: keep them out of logs)."""
    return [target.get_secret_value() for target in settings.ingres.all_targets()]


def source_of(target: str) -> str:
    """The CloudEvents source of a target's events: `ingres://NODE/DATABASE`.

    NODE is the vnode, or HOST[:PORT] of a dynamic node (`@host,protocol,port`;
    a port that is an installation id such as II is left out); a local
    database has none: `ingres:///DATABASE`. Credentials never appear.
    """
    node = without_credentials(target).rpartition("::")[0].strip()
    if node.startswith("@"):
        host, _, rest = node[1:].partition(",")
        port = rest.rpartition(",")[2].strip()
        node = f"{host.strip()}:{port}" if port.isdigit() else host.strip()
    return f"ingres://{quote(node, safe=':[]')}/{quote(database_of(target), safe='')}"


def cloudevents_sources(targets: Sequence[str]) -> dict[str, str]:
    """Each target's database and its CloudEvents source (see `source_of`)."""
    return {database_of(target): source_of(target) for target in targets}


async def _serve_http(address: tuple[str, int], metrics: Metrics, health: Health) -> HttpServer:
    """Start the endpoint; a port in use or a foreign address names the setting to change."""
    try:
        return await start_http(address, metrics, health)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StartupError(
            f"{env_name(('http', 'listen'))} (http.listen): cannot listen on "
            f"{format_host_port(*address)}: {reason}"
        ) from None


class _LoopSink:
    """Carries the catcher thread's reports onto the event loop, in batches.

    One `call_soon_threadsafe` per batch rather than per event: the loop takes
    every event that arrived meanwhile, and hands over at most once per
    `_HANDOVER_INTERVAL`, so that a steady stream travels the spool, the
    publisher and the broker in batches too. The other reports are handled
    after the events caught before them, as the catcher made them.

    Back-pressure, on the catcher thread: it waits while `_INBOX_MAX` events
    are not taken by the loop yet, or while the backlog's gate is closed
    (`block` policy). Without it, a catcher faster than the loop filled the
    inbox without bound, and under `block` the events caught before the loop
    could pause the catcher overshot the backlog's slack and were dropped.
    """

    def __init__(self, lane: _Lane, loop: asyncio.AbstractEventLoop, backlog: Backlog) -> None:
        self._lane = lane
        self._loop = loop
        self._backlog = backlog
        self._lock = threading.Lock()
        self._taken = threading.Condition(self._lock)
        self._inbox: list[CaughtEvent] = []
        self._scheduled = False
        self._closing = False
        self._last_drain = float("-inf")  # loop time of the last hand-over

    def event_caught(self, event: CaughtEvent) -> None:
        with self._lock:
            self._inbox.append(event)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._loop.call_soon_threadsafe(self._schedule_drain)
        self._hold_back()

    def _hold_back(self) -> None:
        """Block the catcher while the loop lags or the backlog is full (see class doc)."""
        while not self._closing:
            with self._lock:
                if len(self._inbox) >= _INBOX_MAX:
                    self._taken.wait(0.1)
                    continue
            if self._backlog.has_room:
                return
            self._backlog.wait_for_room(0.1)

    def close(self) -> None:
        """Stop holding the catcher back (shutdown): it must see its stop request."""
        with self._lock:
            self._closing = True
            self._taken.notify_all()

    def _schedule_drain(self) -> None:
        wait = self._last_drain + _HANDOVER_INTERVAL - self._loop.time()
        if wait > 0:
            self._loop.call_later(wait, self.drain)
        else:
            self.drain()

    def drain(self) -> None:
        """Hand every event the catcher reported so far to the bridge (on the loop)."""
        with self._lock:
            batch, self._inbox = self._inbox, []
            self._scheduled = False
            self._taken.notify_all()
        self._last_drain = self._loop.time()
        if batch:
            self._lane.accept(batch)

    def _after_drain(self, report: Callable[..., None], *args: Any) -> None:
        self.drain()  # the events caught before this report come first: order kept
        report(*args)

    def _report(self, report: Callable[..., None], *args: Any) -> None:
        with suppress(RuntimeError):  # the loop is closed: we are shutting down anyway
            self._loop.call_soon_threadsafe(self._after_drain, report, *args)

    def session_proved(self, moment: datetime) -> None:
        self._report(self._lane.on_proof, moment)

    def session_up(self, catching_from: datetime, registered_by: datetime,
                   reconnected: bool) -> None:
        self._report(self._lane.on_session_up, catching_from, registered_by, reconnected)

    def session_down(self, reason: str) -> None:
        self._report(self._lane.on_session_down, reason)

    def session_unavailable(self, reason: str) -> None:
        self._report(self._lane.on_session_unavailable, reason)

    def catcher_failed(self, error: BaseException) -> None:
        self._report(self._lane.on_failed, error)


class _Lane:
    """One database: its catcher thread, readiness, catch ledger, event ids and gaps.

    Each database has a lane of its own and shares the backlog and the
    publisher, so that one database failing (down, refusing, its catcher
    crashed) never stops or delays the others. `component` is its name on
    /readyz: "ingres" with one database, "ingres:DATABASE" with several.
    """

    def __init__(  # noqa: PLR0917 (a lane is built whole, from the parts it joins)
        self, running: _Running, ingres: IngresSettings, component: str, ledger: CatchLedger,
        backlog: Backlog, identities: EventIdentities,
    ) -> None:
        self.running = running
        self.ingres = ingres
        self.database = ingres.database_name
        self.component = component
        self.ledger = ledger
        self.sink = _LoopSink(self, asyncio.get_running_loop(), backlog)
        self.catcher = Catcher(ingres, self.sink, identities)
        self.failed: BaseException | None = None
        self._alive_task: asyncio.Task[None] | None = None  # while a session is up

    def start(self) -> None:
        """Start catching on a thread of its own."""
        self.running.set_ready(self.component, False, "no session registered yet", self.database)
        metrics = self.running.metrics
        # Exported from the start: a quiet database shows 0, not nothing.
        metrics.events_caught.labels(database=self.database)
        metrics.gap_markers.labels(database=self.database)
        metrics.last_event_timestamp.labels(database=self.database)
        self.catcher.start()

    @property
    def alive(self) -> bool:
        """Whether its catcher thread runs."""
        return self.catcher.alive

    def accept(self, events: list[CaughtEvent]) -> None:
        """Take a batch of this database's caught events into the backlog."""
        self.running.accept(events, self.database)
        self.ledger.caught(events)

    def on_session_up(
        self, catching_from: datetime, registered_by: datetime, reconnected: bool
    ) -> None:
        """A session registered every event; after an outage or a restart, a gap marker.

        The ledger puts the marker into the backlog: the window ends at
        `registered_by` and starts where the ledger says, both DBMS time, the
        clock of the events' `raised_at` (CatcherSink).
        """
        self.running.set_ready(self.component, True, "", self.database)
        marker = self.ledger.session_up(catching_from, registered_by, reconnected)
        if self._alive_task is None:
            self._alive_task = asyncio.create_task(self._record_alive(), name="alive")
        if marker is not None:
            if reconnected:
                self.running.metrics.reconnects.labels(side="ingres").inc()
            self.running.gap_found(marker)

    def on_session_unavailable(self, reason: str) -> None:
        """An attempt to open a session failed: /readyz names why until one succeeds."""
        self.running.set_ready(self.component, False, reason, self.database)

    def on_session_down(self, reason: str) -> None:
        """The session is gone: not ready until it is back; the gap starts where catching did."""
        self.running.set_ready(self.component, False, str(reason), self.database)
        self.stop_recording_alive()
        self.ledger.session_down(str(reason))

    def on_proof(self, moment: datetime) -> None:
        """The DBMS answered a probe at `moment`, and what reached the session before is caught."""
        self.ledger.proved(moment)

    def on_failed(self, error: BaseException) -> None:
        """The catcher gave up: the bridge stops unless other databases still catch."""
        self.failed = error
        self.running.set_ready(self.component, False, f"gave up: {error}", self.database)
        self.running.lane_failed(self, error)

    async def _record_alive(self) -> None:
        """While a session is up: every few seconds, record until when all is caught."""
        while True:
            await asyncio.sleep(ALIVE_INTERVAL)
            self.ledger.record()

    def stop_recording_alive(self) -> None:
        """Stop the periodic record (the session is gone, or shutdown)."""
        if self._alive_task is not None:
            self._alive_task.cancel()
            self._alive_task = None


class Bridge:
    """One bridge: `start`, then `wait` for a stop request, then `shutdown`.

    Complete once constructed: construction does what needs neither the event
    loop nor I/O (the catchers' settings, checked; the readiness components),
    and `start` opens all the rest in one piece (`_Running`). A start that
    fails, or that a signal cancels, closes what it had opened, so nothing is
    ever half-open; `shutdown` then has nothing to do.
    """

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        """Raises StartupError when no Ingres target is set."""
        self.settings = settings
        self.metrics = metrics or Metrics()
        views = per_database(settings)
        several = len(views) > 1
        self._lanes = [
            (view, f"ingres:{view.database_name}" if several else "ingres") for view in views
        ]
        self.health = Health([*(component for _, component in self._lanes), "amqp"])
        self._running: _Running | None = None  # from `start` until `shutdown`

    async def start(self) -> None:
        """Open the spool, connect to RabbitMQ, start catching. Raises StartupError."""
        if self._running is not None:
            raise RuntimeError("the bridge is running already")
        self._running = await _Running.open(self.settings, self.metrics, self.health, self._lanes)

    def wait_registered(self, timeout: float) -> bool:
        """Block (call it in a thread) until every database's first session registered."""
        running = self._running
        return running is not None and running.wait_registered(timeout)

    async def wait(self, stop: asyncio.Event) -> None:
        """Return when `stop` is set; raise when a component failed for good."""
        if self._running is None:
            raise RuntimeError("the bridge is not running: start it first")
        await self._running.wait(stop)

    async def shutdown(self, force: asyncio.Event | None = None) -> None:
        """Shut a running bridge down, phase by phase (`_Running.shutdown`); idempotent.

        Once `force` is set, nothing more is waited for: the catcher thread is
        left behind (a daemon), the drain is cut short, and whatever is not
        confirmed stays in the spool for the next start.
        """
        running, self._running = self._running, None
        if running is not None:
            await running.shutdown(force or asyncio.Event())


class _Running:
    """What a started bridge runs, all of it: built by `open`, ended by `shutdown`."""

    def __init__(  # noqa: PLR0917 (built by `open` only, from the parts it opened)
        self, settings: Settings, metrics: Metrics, health: Health, backlog: Backlog,
        spool: Spool | None, publisher: Publisher, pair: Pair | None, http: HttpServer | None,
        lanes: Sequence[tuple[IngresSettings, str]],
    ) -> None:
        """Start the publisher's task and the catchers (their first sessions come later)."""
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.backlog = backlog
        self.spool = spool
        self.publisher = publisher
        self.pair = pair  # active/standby mode only
        self.http = http  # unless http.listen is off
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        delay_bound = timedelta(seconds=settings.ingres.delivery_delay_max)
        self.lanes = [
            # The first database keeps the ledger's unscoped keys, so a spool
            # written while it was the only one still tells where its gap starts.
            _Lane(self, view, component,
                  CatchLedger(backlog, view.database_name, delay_bound,
                              view.database_name if i else ""),
                  backlog, self._identities(view.database_name))
            for i, (view, component) in enumerate(lanes)
        ]
        self.set_ready("amqp", self._amqp_connected(), "not connected to RabbitMQ")
        self.publish_task = asyncio.create_task(self._publish(), name="publisher")
        self.lease_task = None if pair is None else asyncio.create_task(pair.lease.run(),
                                                                         name="ha lease")
        for lane in self.lanes:
            lane.start()
        self.watch_task = asyncio.create_task(self._watch(), name="catcher+amqp watch")
        self.health.watch_tasks([self.publish_task, self.watch_task,
                                 *([self.lease_task] if self.lease_task else [])])

    @classmethod
    async def open(
        cls, settings: Settings, metrics: Metrics, health: Health,
        lanes: Sequence[tuple[IngresSettings, str]],
    ) -> _Running:
        """Open the spool and the HTTP endpoint, connect to RabbitMQ, then start.

        What is opened is closed again, in reverse, when a later step fails or
        the start is cancelled.
        """
        async with contextlib.AsyncExitStack() as undo:
            spool = Spool.open(settings.spool.path) if settings.spool.enabled else None
            backlog = Backlog(
                metrics, spool, max_events=settings.queue.max_events,
                max_bytes=settings.spool.max_bytes, policy=settings.spool.full_policy,
            )
            undo.callback(backlog.shutdown)  # closes the spool
            http = None
            if (address := settings.http.address) is not None:
                http = await _serve_http(address, metrics, health)
                undo.push_async_callback(http.close)
                log.info("health and metrics on http://%s:%d/", http.host, http.port)
            publisher, pair = _make_publisher(settings, metrics, health, backlog,
                                              lanes[0][0].database_name)
            undo.push_async_callback(publisher.close)
            if pair is not None:
                undo.callback(pair.close)
            await _first_connect(publisher, pair)
            running = cls(settings, metrics, health, backlog, spool, publisher, pair, http,
                          lanes)
            undo.pop_all()
        return running

    def _amqp_connected(self) -> bool:
        if self.pair is not None:
            return self.pair.lease.connected
        return self.publisher.is_connected

    def _identities(self, database: str) -> EventIdentities:
        """Event ids of `database` that continue the ordinals of what an earlier run spooled.

        Only the spool's tail matters (ordinals count within one second); without
        it, an identical event caught again in that second would reuse an id
        still in the spool.
        """
        identities = EventIdentities()
        spool = self.spool
        if spool is not None and spool.depth:
            tail = spool.read(max(spool.last_seq - _ID_TAIL, 0), _ID_TAIL)
            identities.observe(item for _, item in tail
                               if isinstance(item, CaughtEvent) and item.database == database)
        return identities

    async def _watch(self) -> None:
        """Once a second: RabbitMQ readiness, and whether a catcher thread still runs.

        The task ends when every catcher thread has ended, which /healthz
        reports as dead; the threads' own reports have already made `wait` raise.
        """
        while any(lane.alive for lane in self.lanes):
            connected = self._amqp_connected()
            self.set_ready("amqp", connected, "" if connected else "not connected to RabbitMQ")
            await asyncio.sleep(_WATCH_INTERVAL)

    def set_ready(self, component: str, ok: bool, reason: str = "", database: str = "") -> None:
        """Readiness of a component (/readyz) and its gauge (`ready{side, database}`)."""
        self.health.set(component, ok, reason)
        side = component.partition(":")[0]
        self.metrics.ready.labels(side=side, database=database).set(1 if ok else 0)

    def wait_registered(self, timeout: float) -> bool:
        """Block (call it in a thread) until every database's first session registered."""
        return all(lane.catcher.wait_registered(timeout) for lane in self.lanes)

    async def _publish(self) -> None:
        try:
            if self.pair is not None:
                await self.pair.run()
                return
            # Connects first if start() could not: retried while RabbitMQ is unreachable.
            await self.publisher.run(self.backlog)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("publisher failed")
            self.fail(exc)

    async def wait(self, stop: asyncio.Event) -> None:
        """Return when `stop` is set; raise when a component failed for good."""
        stop_task = asyncio.ensure_future(stop.wait())
        waiters: set[asyncio.Future[Any]] = {stop_task, self.failed}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
        if self.failed.done():
            raise self.failed.result()

    # -- shutdown: phases, each logged with what it left ---------------------------

    async def shutdown(self, force: asyncio.Event) -> None:
        """Stop intake, drain within the deadline, then close; leave the rest spooled.

        As uvicorn's server does: named phases in order, each logged with what
        it left, each bounded by its deadline; a second signal (`force`) cuts
        the waits short, never the closing steps.
        """
        phases: list[tuple[str, Callable[[asyncio.Event], Awaitable[str]]]] = [
            ("stop intake", self._stop_intake),
            ("close the Ingres sessions", self._close_sessions),
            ("commit the backlog", self._commit_backlog),
            ("drain into RabbitMQ", self._drain),
            ("close the publisher", self._close_publisher),
            ("close the spool", self._close_spool),
            ("close HTTP", self._close_http),
        ]
        for name, phase in phases:
            left = await phase(force)
            log.info("shutdown: %s: %s", name, left)

    async def _stop_intake(self, _force: asyncio.Event) -> str:
        """No more events from the catchers; each is asked to close its session."""
        for lane in self.lanes:
            lane.sink.close()  # a catcher held back by a full backlog must see its stop
            lane.catcher.stop()
        await _cancelled(self.watch_task)
        return f"{len(self.lanes)} catcher(s) asked to stop"

    async def _close_sessions(self, force: asyncio.Event) -> str:
        """Wait for the catcher threads (_CATCHER_STOP_TIMEOUT); take what they handed over."""
        lanes = self.lanes
        await poll_until(lambda: not any(lane.alive for lane in lanes), _CATCHER_STOP_TIMEOUT,
                         force)
        for lane in lanes:
            lane.sink.drain()  # a hand-over may still be waiting for its interval
            lane.stop_recording_alive()
        open_ = [lane.database for lane in lanes if lane.alive]
        if not open_:
            return "all closed"
        why = "forced" if force.is_set() else f"not within {_CATCHER_STOP_TIMEOUT:.0f} s"
        return f"left open ({why}): {', '.join(open_)}"

    async def _commit_backlog(self, _force: asyncio.Event) -> str:
        """Record how far each database was caught, and commit every item to the spool."""
        for lane in self.lanes:
            lane.ledger.record()  # with what the catchers handed over, in one transaction
        self.backlog.close()
        return f"{self.backlog.depth} item(s) to publish"

    async def _drain(self, force: asyncio.Event) -> str:
        """Publish what is held, for at most shutdown.drain_timeout; a second signal stops it."""
        if self.pair is not None:
            self.pair.close()
            if not self.pair.active:
                # A standby has nothing to drain: what it holds stays in its spool.
                await _cancelled(self.publish_task)
                return f"standby: {self.backlog.depth} item(s) stay in the spool"
        deadline = self.settings.shutdown.drain_timeout
        task = self.publish_task
        if not task.done():
            log.info(
                "shutdown: draining %d queued item(s) into RabbitMQ, for at most %.0f s "
                "(a second signal stops at once)",
                self.backlog.depth, deadline, extra={"wait_seconds": deadline},
            )
        forced = asyncio.ensure_future(force.wait())
        try:
            await asyncio.wait({task, forced}, timeout=deadline,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
        if task.done():
            return f"drained, {self.backlog.depth} item(s) left"
        await _cancelled(task)
        log.warning("shutdown %s: %d item(s) left in the spool for the next start",
                    "forced" if force.is_set() else "deadline passed", self.backlog.depth)
        return f"cut short, {self.backlog.depth} item(s) left in the spool"

    async def _close_publisher(self, _force: asyncio.Event) -> str:
        """Report the progress to a standby, end the lease, close the connection."""
        if self.pair is not None:
            with suppress(Exception):  # only saves the standby some duplicates
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await self.pair.lease.flush_progress()
        if self.lease_task is not None:
            await _cancelled(self.lease_task)
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self.publisher.close()
        except TimeoutError:
            return f"not closed within {_CLOSE_TIMEOUT:.0f} s: the connection is abandoned"
        return "closed"

    async def _close_spool(self, _force: asyncio.Event) -> str:
        """Flush the last deletes and close the spool (Backlog.shutdown)."""
        self.backlog.shutdown()
        left = self.backlog.depth
        return f"{left} item(s) unconfirmed, kept for the next start" if left else "nothing left"

    async def _close_http(self, _force: asyncio.Event) -> str:
        if self.http is None:
            return "not listening (http.listen is off)"
        await self.http.close()
        return "closed"

    # -- reports from the lanes (on the loop) ------------------------------------

    def fail(self, exc: BaseException) -> None:
        """A component gave up: make `wait` raise it."""
        if not self.failed.done():
            self.failed.set_result(exc)

    def lane_failed(self, lane: _Lane, error: BaseException) -> None:
        """A database's catcher gave up: stop, unless other databases still catch."""
        if all(other.failed is not None for other in self.lanes):
            self.fail(error)
            return
        log.error("database %s: catching stopped for good (%s); the other databases go on",
                  lane.database, error, extra={"side": "ingres", "database": lane.database})

    def accept(self, events: list[CaughtEvent], database: str) -> None:
        """Take a batch of one database's caught events into the backlog."""
        self.metrics.events_caught.labels(database=database).inc(len(events))
        self.metrics.last_event_timestamp.labels(database=database).set_to_current_time()
        for event in events:
            # False means dropped by policy: the backlog has logged and counted it.
            self.backlog.put(event)

    def gap_found(self, marker: GapMarker) -> None:
        """A lane's ledger put a gap marker into the backlog: say so (it travels like an event).

        A standby holds it where it holds its events (bridge.ha.HaSource): the
        active bridge was catching, and it publishes it only on a takeover
        that no progress report of the old active covers.
        """
        if self.pair is not None and not self.pair.active:
            log.warning("standby: DBEvents raised between %s and %s were not caught here (%s); "
                        "the active bridge covers them", marker.lost_from.isoformat(),
                        marker.lost_until.isoformat(), marker.reason,
                        extra={"ha_role": "standby"})
            return
        log.warning(
            "DBEvents raised between %s and %s were not caught (%s); publishing a gap marker",
            marker.lost_from.isoformat(), marker.lost_until.isoformat(), marker.reason,
        )


def _make_publisher(
    settings: Settings, metrics: Metrics, health: Health, backlog: Backlog, first_database: str,
) -> tuple[Publisher, Pair | None]:
    """The publisher; in active/standby mode, one that publishes only holding the lease."""
    amqp, ha = settings.amqp, settings.ha
    sources = cloudevents_sources(ingres_targets(settings))
    if ha.mode == "off":
        metrics.ha_active.set(1)
        return Publisher(amqp, metrics, cloudevents_sources=sources), None

    def on_role(active: bool) -> None:
        """The lease was taken or lost: gauge and /readyz."""
        metrics.ha_active.set(1 if active else 0)
        health.role = "active" if active else "standby"

    pair = Pair(amqp=amqp, group=ha.group or first_database, backlog=backlog, metrics=metrics,
                held_max=settings.queue.max_events, on_change=on_role,
                cloudevents_sources=sources)
    on_role(False)
    log.info("active/standby mode, group %s: RabbitMQ decides which bridge publishes",
             pair.lease.group)
    return pair.publisher, pair


async def _first_connect(publisher: Publisher, pair: Pair | None) -> None:
    """Connect to RabbitMQ before catching; raises PublisherStartupError unless transient.

    A broker that is merely unreachable does not stop the start.
    """
    try:
        await (pair.lease.start() if pair else publisher.start())
    except PublisherStartupError as exc:
        if not exc.transient:
            raise
        # Catch from the start anyway: what Ingres raises now is not raised
        # again later, and the spool holds it until the broker is back.
        log.warning("RabbitMQ not reachable yet; catching into the spool meanwhile: %s",
                    exc, extra={"side": "amqp"})


async def run_service(settings: Settings) -> int:
    """Run the bridge until a signal asks it to stop; return the exit status (bridge.exits)."""
    signals = Signals(asyncio.get_running_loop())
    try:
        bridge = Bridge(settings)
    except StartupError as exc:
        log.error("dbevent-bridge stopped: %s", exc)
        return status_of(exc)
    status: int = ExitStatus.OK
    try:
        if await unless_stopped(bridge.start(), signals.stop):
            # What start-up built (modules, settings, connections) lives as long
            # as the process. Frozen, it is no longer traversed by every full
            # collection of the cyclic GC: at 2,000 events/s one came every 5-10 s
            # and stopped the event loop and the catcher for ~40 ms of CPU; 2 ms
            # once frozen (tests/benchmarks, steady section, GC pauses).
            gc.freeze()
            log.info("dbevent-bridge running",
                     extra={"started_at": datetime.now(UTC).isoformat()})
            await bridge.wait(signals.stop)
    except Exception as exc:  # noqa: BLE001 (anything that stops the service becomes its exit status)
        log.error("dbevent-bridge stopped: %s", exc)
        status = status_of(exc)
    finally:
        await bridge.shutdown(signals.force)
    if signals.forced_by is not None:
        status = forced_by(signals.forced_by)
    log.info("dbevent-bridge stopped cleanly" if status == ExitStatus.OK
             else f"dbevent-bridge stopped (exit status {status})")
    return status


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it to end."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
