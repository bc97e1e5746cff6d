"""The `dbevent-bridge` command line (also `python -m bridge`).

Exit statuses: see `bridge.exits`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bridge import __version__
from bridge.exits import ExitStatus

if TYPE_CHECKING:
    from bridge.settings import EventName, Settings


# What each command needs beyond valid settings.
_NEEDS_EVENTS = frozenset({"run", "check-config", "tail"})  # a target and events
_NEEDS_TARGET = frozenset({"sql", "raise"})
_NEEDS_CLIENT = frozenset({"run", "tail", "sql", "raise"})  # the OpenAPI library
# Commands a person reads as they go: console log lines beside their output.
_FOR_PEOPLE = frozenset({"demo", "tail", "sql", "raise"})


def _parser() -> argparse.ArgumentParser:
    from bridge.settings import add_settings_options

    parser = argparse.ArgumentParser(
        prog="dbevent-bridge",
        description="Publishes Actian Ingres DBEvents to a RabbitMQ exchange.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, parent: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(name, help=text, description=text)
        add_settings_options(sub)
        return sub

    command("run", "run the bridge until SIGTERM, SIGINT or SIGHUP")
    command("check-config", "print the effective settings and check that Ingres and RabbitMQ "
            "answer (declares nothing)")
    command("demo", "run the bridge against the built-in simulator and a local RabbitMQ")
    command("doctor", "check the Ingres client installation (II_SYSTEM, library, time zone) "
            "and, when a target is set, connect and register each event")
    command("sql", "run one SQL statement that returns no rows on the configured Ingres "
            "connection (e.g. CREATE DBEVENT, GRANT)").add_argument(
        "statement", metavar="STATEMENT")
    raiser = command("raise", "raise a DBEvent on the configured Ingres connection")
    raiser.add_argument("event", metavar="NAME", help="name or owner.name")
    raiser.add_argument("text", metavar="TEXT", nargs="?", default=None, help="the event text")
    command("tail", "catch the configured DBEvents and print each as one JSON line (the "
            "message body and its routing key); no broker needed")
    spool = commands.add_parser("spool", help="inspect the spool (see `spool --help`)",
                                description="inspect the spool")
    spool_commands = spool.add_subparsers(dest="spool_command", required=True, metavar="COMMAND")
    command("stats", "events held, their bytes and the oldest raise time (works while the "
            "bridge runs)", spool_commands)
    sim = commands.add_parser("sim", help="the Ingres OpenAPI simulator (see `sim --help`)",
                              add_help=False)
    sim.add_argument("sim_args", nargs=argparse.REMAINDER)
    return parser


def _settings(args: argparse.Namespace) -> Settings | ExitStatus:
    """The settings the command needs, or the exit status after saying what is wrong."""
    from bridge.settings import SettingsError, load_settings

    try:
        settings = load_settings(config_file=args.config, cli=args)
        if args.command in _NEEDS_EVENTS:
            # check-config passes exactly what run accepts, no more.
            settings.require_runnable()
        elif args.command in _NEEDS_TARGET:
            settings.require_target()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"dbevent-bridge: {problem}", file=sys.stderr)
        return ExitStatus.BAD_SETTINGS
    if args.command in _NEEDS_CLIENT:
        from bridge.openapi import OpenAPIUnavailableError, check_ii_system

        try:
            # Before logging starts: without the client library nothing else matters.
            check_ii_system()
        except OpenAPIUnavailableError as exc:
            print(f"dbevent-bridge: {exc}", file=sys.stderr)
            return ExitStatus.BAD_SETTINGS
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["sim"]:
        from bridge.sim.cli import main as sim_main

        return sim_main(args_list[1:], prog="dbevent-bridge sim")
    args = _parser().parse_args(args_list)
    event = None
    if args.command == "raise":
        from bridge.settings import parse_event_name

        try:
            event = parse_event_name(args.event)
        except ValueError as exc:
            print(f"dbevent-bridge: raise: {exc}", file=sys.stderr)
            return ExitStatus.BAD_SETTINGS
    settings = _settings(args)
    if isinstance(settings, ExitStatus):
        return settings

    from bridge.logs import configure_logging

    log_format = "console" if args.command in _FOR_PEOPLE else settings.log.format
    configure_logging(settings.log.level, log_format)
    return _dispatch(args, settings, event)


def _dispatch(args: argparse.Namespace, settings: Settings, event: EventName | None) -> int:  # noqa: PLR0911 (one return per command)
    if args.command == "run":
        from bridge.app import run_service

        return asyncio.run(run_service(settings))
    if args.command == "check-config":
        from bridge.checks import check_config

        return asyncio.run(check_config(settings))
    if args.command == "doctor":
        from bridge.doctor import run_doctor

        return run_doctor(settings)
    if args.command == "demo":
        from bridge.demo import run_demo

        return asyncio.run(run_demo(settings))
    from bridge import tools

    if args.command == "sql":
        return tools.run_sql(settings, args.statement)
    if args.command == "raise":
        assert event is not None
        return tools.run_raise(settings, event, args.text)
    if args.command == "tail":
        return tools.run_tail(settings)
    return tools.run_spool_stats(settings)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
