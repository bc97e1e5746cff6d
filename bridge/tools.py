"""Commands for checking triggers and rules by hand: `sql`, `raise`, `tail`, `spool stats`.

They use the configured Ingres connection (the simulator's or a real
server's) and the configured message format, so that what `tail` prints is
what `run` would publish, without a broker.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from bridge.app import cloudevents_sources, ingres_targets, per_database
from bridge.catcher import Catcher, session_for
from bridge.event import CaughtEvent, EventIdentities
from bridge.exits import ExitStatus, forced_by
from bridge.message import MessageFormat, format_timestamp
from bridge.openapi import OpenAPIError
from bridge.routing import RoutingKeyBuilder, RoutingKeyTooLong
from bridge.settings import EventName, Settings
from bridge.signals import Signals, poll_until, unless_stopped
from bridge.spool import SpoolError, read_stats

# How long `tail` waits for its catchers to close their sessions.
_CATCHER_STOP_TIMEOUT = 10.0


def _fail(message: str) -> int:
    print(f"dbevent-bridge: {message}", file=sys.stderr)
    return ExitStatus.FAILURE


def run_sql(settings: Settings, statement: str) -> int:
    """Run one statement that returns no rows (CREATE DBEVENT, GRANT, RAISE DBEVENT, ...)."""
    session = session_for(per_database(settings)[0])  # the first database (README)
    try:
        session.open()
        rows = session.execute(statement)
    except OpenAPIError as exc:
        return _fail(f"Ingres: {exc}")
    finally:
        session.close()
    print(f"OK ({rows} row{'' if rows == 1 else 's'})" if rows > 0 else "OK")
    return ExitStatus.OK


def raise_statement(event: EventName, text: str | None) -> str:
    """RAISE DBEVENT for `event`, with `text` as a string literal (quotes doubled)."""
    if text is None:
        return f"raise dbevent {event.sql}"
    return "raise dbevent {} '{}'".format(event.sql, text.replace("'", "''"))


def run_raise(settings: Settings, name: EventName, text: str | None) -> int:
    """Raise one DBEvent on the configured connection."""
    return run_sql(settings, raise_statement(name, text))


class _Printer:
    """A catcher sink that prints each event as `run` would publish it: one JSON line."""

    def __init__(self, settings: Settings, out: TextIO, failed: Callable[[], object]) -> None:
        amqp = settings.amqp
        self._format = MessageFormat(
            amqp.format, amqp.text_encoding, cloudevents_sources(ingres_targets(settings))
        )
        self._routing = RoutingKeyBuilder(settings.amqp.routing_key)
        self._out = out
        self._failed = failed  # thread-safe: wakes the command up
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    def event_caught(self, event: CaughtEvent) -> None:
        outgoing = self._format.event(event)
        try:
            key: str | None = self._routing.for_event(event)
        except RoutingKeyTooLong:
            key = None  # `run` drops such an event (and counts it); tail shows it anyway
        line: dict[str, Any] = {
            "routing_key": key,
            "message_id": outgoing.properties.message_id,
            "body": json.loads(outgoing.body),
        }
        with self._lock:  # one catcher thread per database writes here
            self._out.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._out.flush()

    def session_up(self, catching_from: datetime, registered_by: datetime,  # noqa: ARG002 (CatcherSink's signature)
                   reconnected: bool) -> None:
        what = "caught again" if reconnected else "catching"
        print(f"dbevent-bridge tail: {what} since {format_timestamp(catching_from)} (DBMS time)",
              file=sys.stderr, flush=True)

    def session_down(self, reason: str) -> None:
        print(f"dbevent-bridge tail: session lost ({reason}); "
              "events raised until it is back are not caught", file=sys.stderr, flush=True)

    def session_unavailable(self, reason: str) -> None:
        """Nothing to add: the catcher's WARNING says why, and it retries as under `run`."""

    def session_proved(self, moment: datetime) -> None:
        """Nothing to record: tail keeps no ledger."""

    def catcher_failed(self, error: BaseException) -> None:
        self.error = error
        self._failed()


def run_tail(settings: Settings, out: TextIO = sys.stdout) -> int:
    """Catch the configured events and print one JSON line each, until a signal (bridge.signals).

    A second signal exits at once (128 + its number), without waiting for the
    catchers to close their sessions.
    """
    return asyncio.run(_tail(settings, out))


async def _tail(settings: Settings, out: TextIO) -> int:
    loop = asyncio.get_running_loop()
    signals = Signals(loop, stopping="stopping", forcing="Ingres sessions left open")
    failed = asyncio.Event()
    printer = _Printer(settings, out, lambda: loop.call_soon_threadsafe(failed.set))
    # One catcher per database, as under `run`; they share the printer.
    catchers = [Catcher(view, printer, EventIdentities()) for view in per_database(settings)]
    try:
        for catcher in catchers:
            catcher.start()
        await unless_stopped(failed.wait(), signals.stop)
    finally:
        for catcher in catchers:
            catcher.stop()
        await poll_until(lambda: not any(c.alive for c in catchers), _CATCHER_STOP_TIMEOUT,
                         signals.force)
    if signals.forced_by is not None:
        return forced_by(signals.forced_by)
    if printer.error is not None:
        return _fail(str(printer.error))
    return ExitStatus.OK


def run_spool_stats(settings: Settings) -> int:
    """Print what the spool holds (events, gap markers) as JSON; works while a bridge runs."""
    try:
        stats = read_stats(settings.spool.path)
    except SpoolError as exc:
        return _fail(f"{exc} (BRIDGE_SPOOL__PATH)")
    oldest = stats.oldest_raised_at
    print(json.dumps({
        "path": str(stats.path),
        "events": stats.events,
        "gap_markers": stats.gap_markers,
        "event_bytes": stats.event_bytes,
        "file_bytes": stats.file_bytes,
        "oldest_raised_at": None if oldest is None else format_timestamp(oldest),
    }))
    return ExitStatus.OK
