"""`dbevent-bridge check-config`: show the effective settings, then try both sides.

It changes nothing anywhere: the exchange is only looked up (a passive
declare), never declared, so a check against production leaves no trace.
"""

from __future__ import annotations

import asyncio
import json
import sys

from bridge.app import StartupError, cloudevents_sources, ingres_targets, per_database
from bridge.catcher import session_for
from bridge.exits import checks_status
from bridge.metrics import Metrics
from bridge.openapi import OpenAPIError, OpenAPIUnavailableError
from bridge.publisher import ExchangeMissingError, Publisher, PublisherError
from bridge.settings import IngresSettings, Settings
from bridge.tls import TlsConfigError


def _check_ingres(settings: Settings) -> str | None:
    """Connect to each database, register every configured event, close: None when all went well.

    With several databases, each problem is named by its database.
    """
    try:
        views = per_database(settings)
    except StartupError as exc:
        return str(exc)
    problems = []
    for view in views:
        problem = _check_database(view)
        if problem is not None:
            problems.append(problem if len(views) == 1 else f"{view.database_name}: {problem}")
    return "; ".join(problems) or None


def _check_database(ingres: IngresSettings) -> str | None:
    try:
        session = session_for(ingres, timeout_s=15.0)
        try:
            session.open()
            session.probe(ingres.probe_timeout)
            for name in ingres.events:
                session.register(name)
        finally:
            session.close()
    except (OpenAPIUnavailableError, OpenAPIError) as exc:
        return str(exc)
    return None


async def _check_amqp(settings: Settings) -> tuple[str | None, str]:
    """Connect and look the exchange up: (problem or None, a note for a good result)."""
    try:
        passive = settings.amqp.model_copy(update={"declare_exchange": False})
        publisher = Publisher(passive, Metrics(),
                              cloudevents_sources=cloudevents_sources(ingres_targets(settings)))
        try:
            await publisher.start()
        finally:
            await publisher.close()
    except ExchangeMissingError as exc:
        if settings.amqp.declare_exchange:
            exchange = settings.amqp.exchange
            return None, f" (exchange {exchange!r} does not exist yet; run declares it)"
        return str(exc), ""
    except (PublisherError, TlsConfigError, ValueError) as exc:
        return str(exc), ""
    return None, ""


async def check_config(settings: Settings) -> int:
    """Print the masked settings and the result of each check; return the exit status."""
    print(json.dumps(settings.masked_dict(), indent=2, default=str))
    ingres_problem, (amqp_problem, amqp_note) = await asyncio.gather(
        asyncio.to_thread(_check_ingres, settings), _check_amqp(settings)
    )
    _report("Ingres", ingres_problem)
    _report("RabbitMQ", amqp_problem, amqp_note)
    return checks_status(ingres_problem is not None, amqp_problem is not None)


def _report(side: str, problem: str | None, note: str = "") -> None:
    if problem is None:
        print(f"{side}: OK{note}")
    else:
        print(f"{side}: FAILED: {problem}", file=sys.stderr)
