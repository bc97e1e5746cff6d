"""The demo stack's "application": raises DBEvents in the simulator.

As a real application's inserts would through the rule in
config/sql/create_events.sql. It is an ordinary client session of the
simulator (bridge.sim.wire): it runs CREATE DBEVENT for each event (an
existing one is fine), marks itself ready (the file that the compose
healthcheck looks for, so the bridge starts only once the events exist and its
REGISTER DBEVENT succeeds), then raises the events in turn, with the text the
sample database procedure would build:

    order_created  'order_id=1 customer=demo status=new'
    order_shipped  'order_id=1 customer=demo status=shipped'

    python demo_app.py --server HOST:PORT [--database DB] [--user USER]
                       [--interval SECONDS] [--count N] [--ready-file PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge.address import parse_host_port
from bridge.sim.wire import SimClient

EVENTS = ("order_created", "order_shipped")
CONNECT_ATTEMPTS = 60
CONNECT_RETRY_SECONDS = 1.0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Raise demo DBEvents in the simulator.")
    parser.add_argument("--server", required=True, type=_address,
                        help="HOST:PORT of the simulator")
    parser.add_argument("--database", default="demodb")
    parser.add_argument("--user", default="ingres")
    parser.add_argument("--password", default="demo")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between orders")
    parser.add_argument("--count", type=int, default=0, help="orders to raise (0: forever)")
    parser.add_argument("--ready-file", type=Path, default=Path("/tmp/demo-app.ready"))  # noqa: S108 (the container's own /tmp)
    return parser.parse_args(argv)


def _address(text: str) -> tuple[str, int]:
    """--server's HOST:PORT, parsed as the bridge parses addresses."""
    try:
        return parse_host_port(text, "127.0.0.1")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None  # a one-line usage error


def event_text(order_id: int, status: str) -> str:
    """The event text the sample procedure builds for one order."""
    return f"order_id={order_id} customer=demo status={status}"


async def _connect(args: argparse.Namespace) -> SimClient:
    host, port = args.server
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return await SimClient.connect(host, port, args.user, args.password,
                                           args.database)
        except OSError as exc:
            if attempt == CONNECT_ATTEMPTS:
                raise
            print(f"demo_app: simulator not ready ({exc}); retrying", file=sys.stderr)
            await asyncio.sleep(CONNECT_RETRY_SECONDS)
    raise AssertionError("unreachable")


async def _create_events(client: SimClient) -> None:
    for name in EVENTS:
        result = await client.query(f"create dbevent {name}")
        # E_QE020A "already exists" is expected when this app restarts.
        if not result.ok and not any("already exists" in e.message for e in result.errors):
            raise RuntimeError(f"create dbevent {name} failed: {result.errors}")


async def run(args: argparse.Namespace) -> int:
    """Create the events, then raise them until stopped; returns orders raised."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    client = await _connect(args)
    orders = 0
    try:
        await _create_events(client)
        args.ready_file.write_text("ready\n")
        print(f"demo_app: events {', '.join(EVENTS)} exist; raising", file=sys.stderr)
        while not stop.is_set() and (args.count == 0 or orders < args.count):
            orders += 1
            for name, status in zip(EVENTS, ("new", "shipped"), strict=True):
                text = event_text(orders, status).replace("'", "''")
                result = await client.query(f"raise dbevent {name} '{text}'")
                if not result.ok:
                    raise RuntimeError(f"raise dbevent {name} failed: {result.errors}")
            print(f"demo_app: raised order {orders}", flush=True)
            if args.count == 0 or orders < args.count:
                await _wait(stop, args.interval)
    finally:
        await client.close()
    return orders


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 0 once stopped or done."""
    asyncio.run(run(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
