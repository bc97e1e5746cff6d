"""Container health check: GET /healthz on the bridge's own HTTP listener.

Run by the image's HEALTHCHECK as `python healthcheck.py`: the image's
`python` is the bridge's virtual environment (/opt/venv/bin comes first on
PATH), so the address is parsed by the bridge's own parser (bridge.address),
and the image needs no curl. It reads BRIDGE_HTTP__LISTEN (default
0.0.0.0:8080) and connects to loopback when the bridge listens on every
address. Exit status 0 means healthy, 1 unhealthy
(what Docker expects); the reason goes to stdout, which `docker inspect` shows.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from bridge.address import format_host_port, parse_host_port

DEFAULT_LISTEN = "0.0.0.0:8080"
TIMEOUT_SECONDS = 3.0
# Where a bridge that listens on every address is reached from inside its container.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 (names them, binds nothing)


def health_url(listen: str) -> str:
    """The /healthz URL that reaches a bridge listening on `listen` (HOST:PORT)."""
    try:
        host, port = parse_host_port(listen, "0.0.0.0")  # noqa: S104 (the bridge's default)
    except ValueError as exc:
        raise ValueError(f"BRIDGE_HTTP__LISTEN: {exc}") from None
    return f"http://{format_host_port(_WILDCARDS.get(host, host), port)}/healthz"


def main() -> int:
    """Probe /healthz once; 0 when it answers 200, else 1."""
    try:
        url = health_url(os.environ.get("BRIDGE_HTTP__LISTEN", DEFAULT_LISTEN))
        # An http:// URL built above from host and port: no other scheme can come in.
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: /healthz answered {exc.code}")
        return 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}")
        return 1
    if status != 200:
        print(f"unhealthy: /healthz answered {status}")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
