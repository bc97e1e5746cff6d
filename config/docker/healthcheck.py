"""Container health check: GET /healthz on the bridge's own HTTP listener.

Run by the image's HEALTHCHECK as `python healthcheck.py`; standard library
only, so the image needs no curl. It reads BRIDGE_HTTP__LISTEN (default
0.0.0.0:8080) the same way the bridge does, and connects to loopback when the
bridge listens on every address. Exit status 0 means healthy, 1 unhealthy
(what Docker expects); the reason goes to stdout, which `docker inspect` shows.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_LISTEN = "0.0.0.0:8080"
TIMEOUT_SECONDS = 3.0
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def health_url(listen: str) -> str:
    """The /healthz URL that reaches a bridge listening on `listen` (HOST:PORT)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"BRIDGE_HTTP__LISTEN={listen!r} is not HOST:PORT")
    host = _WILDCARDS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address needs brackets in a URL
    return f"http://{host}:{port}/healthz"


def main() -> int:
    """Probe /healthz once; 0 when it answers 200, else 1."""
    try:
        url = health_url(os.environ.get("BRIDGE_HTTP__LISTEN", DEFAULT_LISTEN))
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
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
