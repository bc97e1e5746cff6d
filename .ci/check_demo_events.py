"""Checks the demo consumer's output for the events of orders FIRST..LAST (.ci/container).

    python3 check_demo_events.py CONSUMER_LOG FIRST LAST

CONSUMER_LOG holds config/consumer/print_consumer.py's output: one JSON object
per message (other lines are its diagnostics). config/docker/demo_app.py
raises, per order N, `order_created` with the text
`order_id=N customer=demo status=new`, then `order_shipped` with
`status=shipped`. Exit status 0 when each of those events arrived exactly once
with the routing key and body the bridge promises; else 1, saying what is
missing or doubled.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

EXCHANGE = "ingres.dbevents"
EVENTS = (("order_created", "new"), ("order_shipped", "shipped"))


def _messages(log: Path) -> list[dict[str, Any]]:
    messages = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            messages.append(json.loads(line))
    return messages


def _key(message: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """(routing key, event name, text) of an event message; None for gap markers."""
    if message.get("exchange") != EXCHANGE or "body" not in message:
        return None
    body = json.loads(message["body"])
    if "name" not in body:
        return None
    return message["routing_key"], body["name"], body.get("text")


def main(argv: list[str]) -> int:
    log, first, last = Path(argv[1]), int(argv[2]), int(argv[3])
    messages = _messages(log)
    seen = Counter(k for k in map(_key, messages) if k is not None)
    ids = Counter(m.get("message_id") for m in messages)
    problems = [f"message_id {i} delivered {n} times" for i, n in ids.items() if n > 1]
    for order in range(first, last + 1):
        for name, status in EVENTS:
            expected = (f"ingres.{name}", name, f"order_id={order} customer=demo status={status}")
            count = seen[expected]
            if count != 1:
                problems.append(f"order {order} {name}: received {count} times, expected once")
    if problems:
        print("\n".join(problems))
        return 1
    events = 2 * (last - first + 1)
    print(f"orders {first}..{last}: all {events} events received once, routing keys "
          f"ingres.order_created/ingres.order_shipped ({len(messages)} messages consumed in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
