"""The `dbevent-bridge` command line (also `python -m bridge`).

Exit statuses: see `bridge.exits`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from bridge import __version__
from bridge.exits import ExitStatus


def _parser() -> argparse.ArgumentParser:
    from bridge.settings import add_cli_options

    parser = argparse.ArgumentParser(
        prog="dbevent-bridge",
        description="Publishes Actian Ingres DBEvents to a RabbitMQ exchange.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("run", "run the bridge until SIGTERM, SIGINT or SIGHUP"),
        ("check-config", "print the effective settings and check that Ingres and RabbitMQ answer"),
        ("demo", "run the bridge against the built-in simulator and a local RabbitMQ"),
        ("doctor", "check the Ingres client installation (II_SYSTEM, library, time zone) and, "
                   "when a target is set, connect and register each event"),
    ):
        add_cli_options(commands.add_parser(name, help=text, description=text))
    sim = commands.add_parser("sim", help="the Ingres OpenAPI simulator (see `sim --help`)",
                              add_help=False)
    sim.add_argument("sim_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["sim"]:
        from bridge.sim.cli import main as sim_main

        return sim_main(args_list[1:], prog="dbevent-bridge sim")
    args = _parser().parse_args(args_list)
    from bridge.settings import SettingsError, load_settings, overrides_from_args

    try:
        settings = load_settings(overrides_from_args(args), getattr(args, "config", None))
        if args.command in ("run", "check-config"):
            # check-config passes exactly what run accepts, no more.
            settings.require_runnable()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"dbevent-bridge: {problem}", file=sys.stderr)
        return ExitStatus.BAD_SETTINGS

    if args.command == "run":
        from bridge.openapi import OpenAPIUnavailableError, check_ii_system

        try:
            # Before logging starts: without the client library nothing else matters.
            check_ii_system()
        except OpenAPIUnavailableError as exc:
            print(f"dbevent-bridge: {exc}", file=sys.stderr)
            return ExitStatus.BAD_SETTINGS

    from bridge.logs import configure_logging

    # The demo prints for a person; its log lines are console-formatted beside it.
    log_format = "console" if args.command == "demo" else settings.log.format
    configure_logging(settings.log.level, log_format)
    if args.command == "run":
        from bridge.app import run_service

        return asyncio.run(run_service(settings))
    if args.command == "check-config":
        from bridge.checks import check_config

        return asyncio.run(check_config(settings))
    if args.command == "doctor":
        from bridge.doctor import run_doctor

        return run_doctor(settings)
    from bridge.demo import run_demo

    return asyncio.run(run_demo(settings))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
