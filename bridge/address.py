"""HOST:PORT addresses: the one parser for every address the bridge and the simulator take."""

from __future__ import annotations

import ipaddress


def parse_host_port(text: str, default_host: str) -> tuple[str, int]:
    """(host, port) of 'HOST:PORT', '[IPv6]:PORT' or ':PORT' (then the host is `default_host`).

    An IPv6 host comes back without its brackets, ready for `socket.bind`. The
    ValueError says what is wrong with `text`; callers add which setting it was.
    """
    host, colon, port_text = text.strip().rpartition(":")
    if not colon or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"[{host}] is not an IPv6 address") from None
    elif ":" in host or any(char.isspace() for char in host):
        # Without brackets, "::1:8080" could be read several ways: refuse rather than guess.
        raise ValueError(f"expected HOST:PORT with an IPv6 host in brackets, got {text!r}")
    return host or default_host, port


def format_host_port(host: str, port: int) -> str:
    """The 'HOST:PORT' text of an address, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
