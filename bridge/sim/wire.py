"""Framing of the simulator's wire protocol (PROTOCOL.md).

Also the ingresdate layout, and a small asyncio protocol client used by tests
and tools.

Everything on the wire is big-endian; only the 12-byte ingresdate travels in
the little-endian host layout the OpenAPI exposes (`IIAPI_DTE_TYPE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

MAX_FRAME = 1 << 20  # a frame longer than this is a protocol error

# Frame types, client to server.
T_CONNECT = ord("C")
T_QUERY = ord("Q")
T_BYE = ord("B")
T_CONTROL = ord("K")
# Frame types, server to client.
T_ACCEPT = ord("A")
T_ERROR = ord("E")
T_HEADER = ord("H")
T_ROW = ord("R")
T_DONE = ord("D")
T_EVENT = ord("V")
T_CONTROL_REPLY = ord("J")

# OpenAPI data types (iiapi.h) used in HEADER frames.
IIAPI_INT_TYPE = 30
IIAPI_VCH_TYPE = 21

# ingresdate status bits (Ingres adudate.h, AD_DATENTRNL.dn_status).
AD_DN_ABSOLUTE = 0x01
AD_DN_YEARSPEC = 0x04
AD_DN_MONTHSPEC = 0x08
AD_DN_DAYSPEC = 0x10
AD_DN_TIMESPEC = 0x20
# What Ingres stores for date('now') / the time of a raised dbevent:
# adu_datenow sets ABSOLUTE|TIMESPEC and adu_7from_dtntrnl adds the
# YEAR/MONTH/DAY bits because all three are non-zero.
ABSOLUTE_DATETIME_STATUS = (
    AD_DN_ABSOLUTE | AD_DN_YEARSPEC | AD_DN_MONTHSPEC | AD_DN_DAYSPEC | AD_DN_TIMESPEC
)
INGRESDATE_LEN = 12
_DATE = struct.Struct("<bbhhHi")


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow."""


class FrameTooLongError(ProtocolError):
    """A frame announced more than MAX_FRAME bytes."""


# ---------------------------------------------------------------- ingresdate


def encode_ingresdate(when: float | None = None) -> bytes:
    """Encode a POSIX time (default: now) as Ingres stamps a raised dbevent.

    Whole seconds, GMT, like Ingres' `adu_datenow` (the sub-second part is
    dropped). Layout: i1 status, i1 high day, i2 year, i2 month, u2 low day,
    i4 milliseconds since midnight, little-endian.
    """
    secs = int(time.time() if when is None else when)
    tm = time.gmtime(secs)
    day = tm.tm_mday
    millis = (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec) * 1000
    return _DATE.pack(
        ABSOLUTE_DATETIME_STATUS, day >> 16, tm.tm_year, tm.tm_mon, day & 0xFFFF, millis
    )


def decode_ingresdate(raw: bytes) -> datetime:
    """Decode an absolute ingresdate (12 bytes) into an aware UTC datetime."""
    if len(raw) != INGRESDATE_LEN:
        raise ValueError(f"an ingresdate is {INGRESDATE_LEN} bytes, got {len(raw)}")
    status, highday, year, month, lowday, millis = _DATE.unpack(raw)
    if not status & AD_DN_ABSOLUTE:
        raise ValueError(f"not an absolute date (status 0x{status & 0xFF:02x})")
    day = (highday << 16) | lowday
    return datetime(year, month, day, tzinfo=UTC) + timedelta(milliseconds=millis)


# ---------------------------------------------------------------- encoding


def pack_str(value: bytes) -> bytes:
    """A `str`: u16 length, then the bytes."""
    if len(value) > 0xFFFF:
        raise ValueError("str longer than 65535 bytes")
    return struct.pack(">H", len(value)) + value


def pack_lstr(value: bytes) -> bytes:
    """An `lstr`: u32 length, then the bytes."""
    return struct.pack(">I", len(value)) + value


def frame(ftype: int, payload: bytes = b"") -> bytes:
    """A whole frame: u32 length (type byte + payload), u8 type, payload."""
    if len(payload) + 1 > MAX_FRAME:
        raise FrameTooLongError(f"frame of {len(payload) + 1} bytes")
    return struct.pack(">IB", len(payload) + 1, ftype) + payload


def connect_frame(user: str, password: str, database: str) -> bytes:
    """CONNECT: the first frame of a session."""
    return frame(
        T_CONNECT,
        pack_str(user.encode()) + pack_str(password.encode()) + pack_str(database.encode()),
    )


def query_frame(sql: str | bytes) -> bytes:
    """QUERY: one statement."""
    raw = sql.encode("utf-8", "surrogateescape") if isinstance(sql, str) else sql
    return frame(T_QUERY, pack_lstr(raw))


def control_frame(json_text: str) -> bytes:
    """CONTROL: one JSON fault-control command."""
    return frame(T_CONTROL, pack_lstr(json_text.encode()))


def accept_frame(version: str, database: str, user: str) -> bytes:
    """ACCEPT: the CONNECT succeeded."""
    return frame(
        T_ACCEPT, pack_str(version.encode()) + pack_str(database.encode()) + pack_str(user.encode())
    )


def error_frame(sqlstate: str, code: int, message: str) -> bytes:
    """ERROR: one error of the current CONNECT or QUERY."""
    return frame(
        T_ERROR,
        pack_str(sqlstate.encode("ascii"))
        + struct.pack(">i", code)
        + pack_str(message.encode("utf-8", "surrogateescape")),
    )


@dataclass(frozen=True, slots=True)
class Column:
    """A result column as described by a HEADER frame."""

    name: str
    datatype: int
    length: int
    nullable: bool = False


def header_frame(columns: list[Column]) -> bytes:
    """HEADER: the columns of the rows that follow."""
    parts = [struct.pack(">H", len(columns))]
    for col in columns:
        parts.append(pack_str(col.name.encode()))
        parts.append(struct.pack(">hHB", col.datatype, col.length, int(col.nullable)))
    return frame(T_HEADER, b"".join(parts))


def row_frame(values: list[bytes | None]) -> bytes:
    """ROW: per column u8 isnull and the value's bytes."""
    parts = [b"\x01" + pack_str(b"") if value is None else b"\x00" + pack_str(value)
             for value in values]
    return frame(T_ROW, b"".join(parts))


def done_frame(ok: bool, rowcount: int = 0) -> bytes:
    """DONE: the end of a QUERY (or of a failed CONNECT)."""
    return frame(T_DONE, struct.pack(">Bi", int(ok), rowcount))


def event_frame(name: str, owner: str, database: str, when: bytes, text: bytes | None) -> bytes:
    """EVENT: one dbevent notification; `text` None or empty means no text."""
    has_text = bool(text)
    return frame(
        T_EVENT,
        pack_str(name.encode("utf-8", "surrogateescape"))
        + pack_str(owner.encode("utf-8", "surrogateescape"))
        + pack_str(database.encode("utf-8", "surrogateescape"))
        + when
        + struct.pack(">B", int(has_text))
        + pack_str(text or b""),
    )


def control_reply_frame(json_text: str) -> bytes:
    """CONTROL reply: one JSON answer."""
    return frame(T_CONTROL_REPLY, pack_lstr(json_text.encode()))


# ---------------------------------------------------------------- decoding


class Payload:
    """Reads the fields of one frame's payload in order."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        """The next `n` raw bytes."""
        end = self._pos + n
        if end > len(self._data):
            raise ProtocolError("payload shorter than its fields")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def _unpack(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        value: int = struct.unpack(fmt, self.take(size))[0]
        return value

    def u8(self) -> int:
        """An unsigned byte."""
        return self._unpack(">B")

    def u16(self) -> int:
        """An unsigned 16-bit integer."""
        return self._unpack(">H")

    def i16(self) -> int:
        """A signed 16-bit integer."""
        return self._unpack(">h")

    def i32(self) -> int:
        """A signed 32-bit integer."""
        return self._unpack(">i")

    def str(self) -> bytes:
        """A `str` field (u16 length)."""
        return self.take(self.u16())

    def lstr(self) -> bytes:
        """An `lstr` field (u32 length)."""
        return self.take(self._unpack(">I"))

    def end(self) -> None:
        """Check that every byte was consumed."""
        if self._pos != len(self._data):
            raise ProtocolError("trailing bytes in frame")


def split_frames(data: bytes) -> Iterator[tuple[int, Payload]]:
    """The frames of a buffer of whole frames, as (type, payload)."""
    pos = 0
    while pos < len(data):
        if pos + 5 > len(data):
            raise ProtocolError("truncated frame header")
        (length,) = struct.unpack_from(">I", data, pos)
        if length < 1 or pos + 4 + length > len(data):
            raise ProtocolError(f"frame length {length} beyond the buffer")
        yield data[pos + 4], Payload(data[pos + 5 : pos + 4 + length])
        pos += 4 + length


async def read_frame(reader: asyncio.StreamReader, head: bytes | None = None) -> tuple[int, bytes]:
    """Read one frame; `asyncio.IncompleteReadError` at a clean or torn end.

    `head`: the frame's first 4 bytes, when the caller has read them already.
    """
    if head is None:
        head = await reader.readexactly(4)
    (length,) = struct.unpack(">I", head)
    if length < 1 or length > MAX_FRAME:
        raise FrameTooLongError(f"frame length {length}")
    body = await reader.readexactly(length)
    return body[0], body[1:]


# ---------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class SimError:
    """One ERROR frame."""

    sqlstate: str
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One EVENT frame."""

    name: str
    owner: str
    database: str
    time_raw: bytes
    text: bytes | None

    @property
    def time(self) -> datetime:
        """The raise time as an aware UTC datetime."""
        return decode_ingresdate(self.time_raw)


@dataclass(slots=True)
class QueryResult:
    """Everything a QUERY (or a failed CONNECT) produced, up to its DONE."""

    ok: bool = False
    rowcount: int = 0
    errors: list[SimError] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    rows: list[list[bytes | None]] = field(default_factory=list)


class SessionRefusedError(Exception):
    """The server answered CONNECT with errors."""

    def __init__(self, errors: list[SimError]) -> None:
        super().__init__("; ".join(f"{e.sqlstate} {e.code:#x} {e.message}" for e in errors))
        self.errors = errors


def decode_error(p: Payload) -> SimError:
    """Decode an ERROR payload."""
    sqlstate = p.str().decode("ascii")
    code = p.i32()
    message = p.str().decode("utf-8", "surrogateescape")
    return SimError(sqlstate, code, message)


def decode_event(p: Payload) -> SimEvent:
    """Decode an EVENT payload."""
    name = p.str().decode("utf-8", "surrogateescape")
    owner = p.str().decode("utf-8", "surrogateescape")
    database = p.str().decode("utf-8", "surrogateescape")
    when = p.take(INGRESDATE_LEN)
    has_text = p.u8()
    text = p.str()
    return SimEvent(name, owner, database, when, text if has_text else None)


def decode_header(p: Payload) -> list[Column]:
    """Decode a HEADER payload."""
    cols = []
    for _ in range(p.u16()):
        name = p.str().decode()
        datatype = p.i16()
        length = p.u16()
        nullable = bool(p.u8())
        cols.append(Column(name, datatype, length, nullable))
    return cols


def decode_row(p: Payload, ncols: int) -> list[bytes | None]:
    """Decode a ROW payload of `ncols` columns."""
    values: list[bytes | None] = []
    for _ in range(ncols):
        isnull = p.u8()
        value = p.str()
        values.append(None if isnull else value)
    return values


class SimClient:
    """A minimal asyncio client of the simulator: one session.

    EVENT frames that arrive while a query is read, or while `next_event`
    waits, are queued in arrival order; `next_event` hands them out FIFO.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.events: list[SimEvent] = []
        self.accepted: tuple[str, str, str] = ("", "", "")

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        user: str = "ingres",
        password: str = "x",
        database: str = "demodb",
    ) -> SimClient:
        """Open a session; raises SessionRefusedError when the server says no."""
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        writer.write(connect_frame(user, password, database))
        await writer.drain()
        ftype, payload = await read_frame(reader)
        if ftype == T_ACCEPT:
            p = Payload(payload)
            client.accepted = (p.str().decode(), p.str().decode(), p.str().decode())
            return client
        result = QueryResult()
        await client._consume(ftype, payload, result)
        while ftype != T_DONE:
            ftype, payload = await read_frame(reader)
            await client._consume(ftype, payload, result)
        await client.close()
        raise SessionRefusedError(result.errors)

    async def _consume(self, ftype: int, payload: bytes, result: QueryResult) -> None:
        p = Payload(payload)
        if ftype == T_EVENT:
            self.events.append(decode_event(p))
        elif ftype == T_ERROR:
            result.errors.append(decode_error(p))
        elif ftype == T_HEADER:
            result.columns = decode_header(p)
        elif ftype == T_ROW:
            result.rows.append(decode_row(p, len(result.columns)))
        elif ftype == T_DONE:
            result.ok = bool(p.u8())
            result.rowcount = p.i32()
        else:
            raise ProtocolError(f"unexpected frame type {ftype!r}")
        p.end()

    async def query(self, sql: str | bytes) -> QueryResult:
        """Run one statement and read its response up to DONE."""
        self._writer.write(query_frame(sql))
        await self._writer.drain()
        result = QueryResult()
        while True:
            ftype, payload = await read_frame(self._reader)
            await self._consume(ftype, payload, result)
            if ftype == T_DONE:
                return result

    async def ok(self, sql: str | bytes) -> QueryResult:
        """Run one statement that must succeed."""
        result = await self.query(sql)
        if not result.ok:
            raise AssertionError(f"{sql!r} failed: {result.errors}")
        return result

    async def next_event(self, seconds: float | None = 5.0) -> SimEvent | None:
        """The next event, reading the socket if none is queued; None after `seconds`."""
        if self.events:
            return self.events.pop(0)
        try:
            async with asyncio.timeout(seconds):
                while not self.events:
                    ftype, payload = await read_frame(self._reader)
                    await self._consume(ftype, payload, QueryResult())
        except TimeoutError:
            return None
        return self.events.pop(0)

    async def read_closed(self, seconds: float = 5.0) -> bool:
        """Read until the server closes the socket; True if it did within `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    ftype, payload = await read_frame(self._reader)
                    await self._consume(ftype, payload, QueryResult())
        except (asyncio.IncompleteReadError, ConnectionError):
            return True
        except TimeoutError:
            return False

    async def close(self, bye: bool = True) -> None:
        """End the session (BYE first unless `bye` is False) and close the socket."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            if bye and not self._writer.is_closing():
                self._writer.write(frame(T_BYE))
                await self._writer.drain()
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
