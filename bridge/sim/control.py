"""A client for CONTROL frames: fault injection on a running simulator."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

from bridge.sim import wire


def _decode_reply(ftype: int, payload: bytes) -> dict[str, Any]:
    if ftype != wire.T_CONTROL_REPLY:
        raise wire.ProtocolError(f"expected a CONTROL reply, got frame {ftype!r}")
    p = wire.Payload(payload)
    reply: dict[str, Any] = json.loads(p.lstr())
    p.end()
    return reply


async def send_async(host: str, port: int, command: dict[str, Any]) -> dict[str, Any]:
    """Send one CONTROL command and return the server's JSON reply."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(wire.control_frame(json.dumps(command)))
        await writer.drain()
        ftype, payload = await wire.read_frame(reader)
        return _decode_reply(ftype, payload)
    finally:
        writer.close()
        await writer.wait_closed()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("server closed the connection")
        chunks += chunk
    return bytes(chunks)


def send(host: str, port: int, command: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Blocking variant of `send_async`, for the CLI and synchronous tests."""
    with socket.create_connection((host, port), timeout) as sock:
        sock.sendall(wire.control_frame(json.dumps(command)))
        (length,) = struct.unpack(">I", _recv_exactly(sock, 4))
        if length < 1 or length > wire.MAX_FRAME:
            raise wire.FrameTooLongError(f"frame length {length}")
        body = _recv_exactly(sock, length)
    return _decode_reply(body[0], body[1:])


def drop_sessions(host: str, port: int) -> dict[str, Any]:
    """Close every session's socket at once."""
    return send(host, port, {"op": "drop_sessions"})


def refuse(host: str, port: int, seconds: float) -> dict[str, Any]:
    """Refuse new connections for `seconds`."""
    return send(host, port, {"op": "refuse", "seconds": seconds})


def delay(host: str, port: int, ms: float) -> dict[str, Any]:
    """Make the event thread hand SHARE events over `ms` milliseconds late."""
    return send(host, port, {"op": "delay", "ms": ms})


def clock(host: str, port: int, offset_seconds: float) -> dict[str, Any]:
    """Run the DBMS clock `offset_seconds` ahead of the host's (negative: behind)."""
    return send(host, port, {"op": "clock", "offset_seconds": offset_seconds})


def restart(host: str, port: int, down_seconds: float) -> dict[str, Any]:
    """Drop everything and listen again after `down_seconds`."""
    return send(host, port, {"op": "restart", "down_seconds": down_seconds})


def stats(host: str, port: int) -> dict[str, Any]:
    """The server's counters."""
    return send(host, port, {"op": "stats"})
