"""HOST:PORT parsing (bridge/address.py), as the HTTP endpoint and the simulator use it."""

from __future__ import annotations

import re

import pytest

from bridge.address import format_host_port, parse_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::]:65535", ("::", 65535)),
        ("localhost:8080", ("localhost", 8080)),
        (":9100", ("default", 9100)),
        (" db:21064 ", ("db", 21064)),
    ],
)
def test_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, "default") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8080", "expected HOST:PORT, got '8080'"),
        ("host:", "expected HOST:PORT, got 'host:'"),
        ("host:http", "expected HOST:PORT, got 'host:http'"),
        ("host:-1", "expected HOST:PORT, got 'host:-1'"),
        ("host:70000", "port 70000 is out of range (0-65535)"),
        ("::1:8080", "IPv6 host in brackets"),
        ("my host:8080", "expected HOST:PORT with an IPv6 host in brackets"),
        ("[nope]:8080", "[nope] is not an IPv6 address"),
    ],
)
def test_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_host_port(text, "default")


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [("0.0.0.0", 8080, "0.0.0.0:8080"), ("::", 8080, "[::]:8080"), ("db", 0, "db:0")],
)
def test_format_round_trips(host: str, port: int, text: str) -> None:
    assert format_host_port(host, port) == text
    assert parse_host_port(text, "unused") == (host, port)
