"""`dbevent-bridge check-config`: show the effective settings, then try both sides.

It changes nothing anywhere: the exchange is only looked up (a passive
declare), never declared, so a check against production leaves no trace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys

from bridge.app import StartupError, catcher_configs, ingres_targets, publisher_config
from bridge.catcher import CatcherConfig
from bridge.exits import checks_status
from bridge.metrics import Metrics
from bridge.openapi import OpenAPIError, OpenAPIUnavailableError, Session
from bridge.publisher import ExchangeMissingError, Publisher, PublisherError
from bridge.settings import Settings, database_of
from bridge.tls import TlsConfigError


def _check_ingres(settings: Settings) -> str | None:
    """Connect to each database, register every configured event, close: None when all went well.

    With several databases, each problem is named by its database.
    """
    try:
        configs = catcher_configs(settings)
    except StartupError as exc:
        return str(exc)
    problems = []
    for config in configs:
        problem = _check_database(settings, config)
        if problem is not None:
            database = database_of(config.target)
            problems.append(problem if len(configs) == 1 else f"{database}: {problem}")
    return "; ".join(problems) or None


def _check_database(settings: Settings, config: CatcherConfig) -> str | None:
    try:
        session = Session(config.target, config.user, config.password, timeout_s=15.0)
        try:
            session.open()
            session.probe(settings.ingres.probe_timeout)
            for name in config.events:
                session.register(name)
        finally:
            session.close()
    except (OpenAPIUnavailableError, OpenAPIError) as exc:
        return str(exc)
    return None


async def _check_amqp(settings: Settings) -> tuple[str | None, str]:
    """Connect and look the exchange up: (problem or None, a note for a good result)."""
    try:
        config = publisher_config(settings.amqp, ingres_targets(settings))
        passive = dataclasses.replace(config, declare_exchange=False)
        publisher = Publisher(passive, Metrics())
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
