"""Command line of the simulator: `serve`, `ii-system` and `ctl`.

serve --listen HOST:PORT [--database NAME ...] [--dba USER] [--users FILE]
ii-system
ctl --server HOST:PORT drop-sessions|refuse SECONDS|delay MS|clock SECONDS|restart SECONDS|stats
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bridge.address import parse_host_port
from bridge.sim import control
from bridge.sim.server import SimServer


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Ingres DBMS simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the DBMS simulator until SIGTERM/SIGINT; the port serves both our "
        "libiiapi.1.so and Actian's real client (@HOST,tcp_ip,PORT[user,pw]::db)",
    )
    serve.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    serve.add_argument(
        "--database",
        action="append",
        default=None,
        help="a database that exists (repeatable); default: any name is accepted",
    )
    serve.add_argument("--dba", default="ingres", help="the user owning the databases")
    serve.add_argument(
        "--users",
        type=Path,
        default=None,
        help='JSON file {"user": "password"}: enforce these passwords',
    )
    serve.add_argument("--log-level", default="INFO")
    sub.add_parser("ii-system", help="build the simulated II_SYSTEM and print its path")
    ctl = sub.add_parser("ctl", help="send a fault-control command to a running simulator")
    ctl.add_argument("--server", required=True, help="HOST:PORT of the simulator")
    ops = ctl.add_subparsers(dest="op", required=True)
    ops.add_parser("drop-sessions")
    ops.add_parser("stats")
    ops.add_parser("refuse").add_argument("seconds", type=float)
    ops.add_parser("delay", help="the event thread hands SHARE events over MS late").add_argument(
        "ms", type=float
    )
    ops.add_parser("clock", help="run the DBMS clock SECONDS ahead of the host").add_argument(
        "seconds", type=float
    )
    ops.add_parser("restart").add_argument("seconds", type=float)
    return parser


async def _serve(server: SimServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(f"dbmssim listening on {server.host}:{server.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


class _UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def _read_users(path: Path) -> dict[str, str]:
    """The --users file: a JSON object of user names to passwords."""
    try:
        users = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _UsageError(f"--users {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _UsageError(f"--users {path}: not a JSON file: {exc}") from None
    if not isinstance(users, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in users.items()
    ):
        raise _UsageError(f'--users {path}: expected a JSON object {{"user": "password"}}')
    return users


def _address(option: str, text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text, "127.0.0.1")
    except ValueError as exc:
        raise _UsageError(f"{option}: {exc}") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    host, port = _address("--listen", args.listen)
    users = None if args.users is None else _read_users(args.users)
    level = args.log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise _UsageError(f"--log-level: expected DEBUG, INFO, WARNING or ERROR; got {level!r}")
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    server = SimServer(host, port, databases=args.database, dba=args.dba, users=users)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(server))
    except OSError as exc:
        # Binding is the only thing here that touches the system: name the option.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise _UsageError(f"--listen {args.listen}: cannot listen: {reason}") from None
    return 0


def _cmd_ii_system() -> int:
    # Imported lazily: building needs a C compiler, serving does not.
    build: Any = importlib.import_module("bridge.sim.build")
    try:
        path = build.ensure_ii_system()
    except build.BuildError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(path)
    return 0


def _cmd_ctl(args: argparse.Namespace) -> int:
    host, port = _address("--server", args.server)
    command: dict[str, Any]
    if args.op == "drop-sessions":
        command = {"op": "drop_sessions"}
    elif args.op == "refuse":
        command = {"op": "refuse", "seconds": args.seconds}
    elif args.op == "delay":
        command = {"op": "delay", "ms": args.ms}
    elif args.op == "clock":
        command = {"op": "clock", "offset_seconds": args.seconds}
    elif args.op == "restart":
        command = {"op": "restart", "down_seconds": args.seconds}
    else:
        command = {"op": "stats"}
    try:
        reply = control.send(host, port, command)
    except OSError as exc:
        print(f"dbmssim ctl: {host}:{port}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


def main(argv: list[str], prog: str = "python -m bridge.sim") -> int:
    """Run the simulator command line; returns the exit status."""
    args = _parser(prog).parse_args(argv)
    try:
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "ii-system":
            return _cmd_ii_system()
        return _cmd_ctl(args)
    except _UsageError as exc:
        print(f"{prog} {args.command}: {exc}", file=sys.stderr)
        return 2
