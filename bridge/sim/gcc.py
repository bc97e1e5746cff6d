"""The network layers of Ingres's wire protocol.

As the remote end of a GCC connection speaks them to Actian's client library
(PROTOCOL.md, "Ingres's own protocol"): packet framing, the transport, session, presentation and
application layers, and the message units that carry GCA messages.

Pure functions and small stateful buffers; no I/O. Header integers of the
protocol layers are big-endian (`GCgeti2` in common/gcf/hdr/gccpci.h); the
2-byte packet length in front of each packet is little-endian and counts
itself (cl/clf/gc_unix/gccbs.c).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

# Transport layer TPDU codes and parameters (gccpci.h).
TPDU_CR = 0xE0  # connect request
TPDU_CC = 0xD0  # connect confirm
TPDU_DR = 0x80  # disconnect request
TPDU_DT = 0xF0  # data
TPDU_CODE_MASK = 0xF0
TDT_EOT = 0x80  # end of TSDU, in the DT header's last byte
TCR_SIZE = 0xC0  # TPDU size parameter
TCR_CALLING = 0xC1
TCR_CALLED = 0xC2
TCR_VERSION = 0xC4
TCR_MASK = 0xC7  # session mask (used to salt the password key)
TPDU_8K = 0x0D  # log2 of the TPDU size: 8192
# Transport version 2 (TCR_VN_2): the client then falls back to the session
# connect of the Ingres 10 source, with user and password in it.
TL_VERSION = 2
SERVER_REF = 0x0007  # our transport reference; the client echoes it

# Session layer SPDU types and parameter ids (gccpci.h).
SPDU_DT = 1
SPDU_EX = 5
SPDU_FN = 9
SPDU_DN = 10
SPDU_RF = 12
SPDU_CN = 13
SPDU_AC = 14
SPDU_AB = 25
SL_VERSION_PI = 0x16
SL_USER_DATA_PGI = 0xC1
SL_EXTENDED_PGI = 0xC2
SL_USER_XPI = 10
SL_PASS_XPI = 11
SL_XLI = 0xFF  # a one-byte length of FF announces a 2-byte length
SL_VERSION = 1  # Ingres 10's session protocol

# Presentation and application layer versions answered (Ingres 10 levels,
# to which this client falls back: gccpl.c, gccal.c).
PL_VERSION = 0x0703
AL_VERSION = 0x0606
GCA_PROTOCOL_LEVEL = 68  # GCA_PROTOCOL_LEVEL_68 (gca.h)
PL_CONTEXT_LEN = 32  # 16 bytes abstract syntax + 16 bytes architecture vector
AL_TITLE_LEN = 64

# Message units (PDV, gccpci.h; PS_EOD/PS_EOG in gcc.h).
UNIT_EOD = 0x01  # last unit of a message
UNIT_EOG = 0x02  # last message of a group (the sender's turn ends)
UNIT_HEADER = struct.Struct(">BBH")

PACKET_MAX = 8192  # the TPDU size both sides agree on (TPDU_8K)
_DT_TPDU_LEN = 5  # li, code, dst ref (2), eot
_DT_SPDU = bytes([SPDU_DT, 0])
_EX_SPDU = bytes([SPDU_EX, 0])


class GccError(Exception):
    """The peer sent something this end of the protocol does not accept."""


# ---------------------------------------------------------------- packets


class PacketBuffer:
    """Splits a TCP byte stream into packets (2-byte little-endian length first)."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> None:
        """Add bytes read from the socket."""
        self._data += data

    def packets(self) -> Iterator[bytes]:
        """Every complete packet buffered so far, without its length prefix."""
        while len(self._data) >= 2:
            (length,) = struct.unpack_from("<H", self._data)
            if length < 3 or length > PACKET_MAX + 2:
                raise GccError(f"packet length {length}")
            if len(self._data) < length:
                return
            packet = bytes(self._data[2:length])
            del self._data[:length]
            yield packet


def packet(body: bytes) -> bytes:
    """Frame one packet: its little-endian length (counting itself), then the body."""
    return struct.pack("<H", len(body) + 2) + body


def looks_like_connect_request(head: bytes) -> bool:
    """Whether the first 4 bytes of a connection start a GCC transport CR.

    Our own protocol starts with a 4-byte big-endian frame length below 1 MiB,
    so its first byte is 0; a CR packet is a few dozen bytes long (low length
    byte non-zero), followed by the CR's length indicator and code 0xE0.
    """
    return len(head) == 4 and head[0] != 0 and head[3] & TPDU_CODE_MASK == TPDU_CR


# ---------------------------------------------------------------- parameters


def _params(data: bytes, extended: bool) -> Iterator[tuple[int, bytes]]:
    """(code, value) pairs: 1-byte code, 1-byte length or FF + 2-byte length."""
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise GccError("truncated parameter")
        code, length = data[pos], data[pos + 1]
        pos += 2
        if extended and length == SL_XLI:
            if pos + 2 > len(data):
                raise GccError("truncated parameter length")
            (length,) = struct.unpack_from(">H", data, pos)
            pos += 2
        if pos + length > len(data):
            raise GccError(f"parameter 0x{code:02x} longer than its PDU")
        yield code, data[pos : pos + length]
        pos += length


def _param(code: int, value: bytes) -> bytes:
    if len(value) < SL_XLI:
        return bytes([code, len(value)]) + value
    return bytes([code, SL_XLI]) + struct.pack(">H", len(value)) + value


# ---------------------------------------------------------------- transport


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A transport CR: the client's reference and session mask."""

    src_ref: int
    mask: bytes | None
    tpdu_size: int


def parse_cr(tpdu: bytes) -> ConnectRequest:
    """Parse a transport connect request (gcctl.c)."""
    if len(tpdu) < 7 or tpdu[1] & TPDU_CODE_MASK != TPDU_CR:
        raise GccError("expected a transport connect request")
    li = tpdu[0]
    if li + 1 > len(tpdu):
        raise GccError("CR length indicator beyond the packet")
    (src_ref,) = struct.unpack_from(">H", tpdu, 4)
    mask = None
    size = TPDU_8K
    for code, value in _params(tpdu[7 : li + 1], extended=False):
        if code == TCR_MASK:
            mask = value
        elif code == TCR_SIZE and len(value) == 1:
            size = value[0]
    return ConnectRequest(src_ref, mask, size)


def cc_tpdu(client_ref: int) -> bytes:
    """Transport connect confirm at version 2, 8 KB TPDUs and no session mask.

    Leaving the mask out keeps the password key the plain user name (gcctl.c:
    a partner that sends no mask turns masking off).
    """
    params = (
        _param(TCR_CALLING, b"\x00\x00")
        + _param(TCR_CALLED, b"\x00\x00")
        + _param(TCR_SIZE, bytes([TPDU_8K]))
        + _param(TCR_VERSION, bytes([TL_VERSION]))
    )
    fixed = bytes([TPDU_CC]) + struct.pack(">HHB", client_ref, SERVER_REF, 0x20)
    body = fixed + params
    return bytes([len(body)]) + body


def dt_tpdu(client_ref: int, spdu: bytes) -> bytes:
    """A data TPDU carrying one SPDU."""
    return bytes([4, TPDU_DT]) + struct.pack(">H", client_ref) + bytes([TDT_EOT]) + spdu


def tpdu_kind(tpdu: bytes) -> int:
    """The TPDU code of a packet (TPDU_DT, TPDU_DR, ...)."""
    if len(tpdu) < 2:
        raise GccError("packet too short for a TPDU")
    return tpdu[1] & TPDU_CODE_MASK


def dt_payload(tpdu: bytes) -> bytes:
    """The SPDU a data TPDU carries."""
    li = tpdu[0]
    if li + 1 > len(tpdu):
        raise GccError("DT length indicator beyond the packet")
    return tpdu[li + 1 :]


# ---------------------------------------------------------------- session


@dataclass(frozen=True, slots=True)
class SessionConnect:
    """What a session CN carries: the database and the credentials, if any."""

    architecture: bytes  # the client's 16-byte architecture vector (echoed back)
    presentation_selector: int
    database: str
    user: str | None
    password: bytes | None  # still encrypted (gccrypt.decode_password)


def _nts(value: bytes) -> str:
    return value.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def parse_cn(spdu: bytes) -> SessionConnect:
    """Parse a session connect: presentation connect + application request inside."""
    if len(spdu) < 2 or spdu[0] != SPDU_CN:
        raise GccError("expected a session connect")
    body = _spdu_body(spdu)
    user_data = b""
    user: str | None = None
    password: bytes | None = None
    for code, value in _params(body, extended=True):
        if code == SL_USER_DATA_PGI:
            user_data = value
        elif code == SL_EXTENDED_PGI:
            for xcode, xvalue in _params(value, extended=True):
                if xcode == SL_USER_XPI:
                    user = _nts(xvalue)
                elif xcode == SL_PASS_XPI:
                    password = xvalue
    # Presentation connect (PL_CP_PCI): calling and called selectors, version,
    # context, requirements; the application request (AL_AARQ_PCI) follows.
    pl_len = 2 + 2 + 2 + PL_CONTEXT_LEN + 2 + 2
    if len(user_data) < pl_len + 4:
        raise GccError("session connect without presentation and application data")
    (called,) = struct.unpack_from(">H", user_data, 2)
    architecture = user_data[6 + 16 : 6 + PL_CONTEXT_LEN]
    _version, title_len = struct.unpack_from(">HH", user_data, pl_len)
    title = user_data[pl_len + 4 : pl_len + 4 + min(title_len, AL_TITLE_LEN)]
    return SessionConnect(architecture, called, _nts(title), user, password)


def _spdu_body(spdu: bytes) -> bytes:
    length = spdu[1]
    start = 2
    if length == SL_XLI:
        (length,) = struct.unpack_from(">H", spdu, 2)
        start = 4
    return spdu[start : start + length]


def _spdu(kind: int, body: bytes) -> bytes:
    if len(body) < SL_XLI:
        return bytes([kind, len(body)]) + body
    return bytes([kind, SL_XLI]) + struct.pack(">H", len(body)) + body


def ac_spdu(conn: SessionConnect, accept: bool, status: int = 0) -> bytes:
    """Session accept carrying the presentation accept and the application response.

    The presentation accept echoes the client's architecture vector: the
    connection is then homogeneous and GCA messages travel in the client's
    native layout without conversion (gccpl.c, gcc_rsp_av). A refusal is an
    application response with result 1 and the status (gccal.c).
    """
    context = b"\xff" * 16 + conn.architecture
    pl = struct.pack(">H", conn.presentation_selector) + context
    pl += struct.pack(">HHH", PL_VERSION, 0, 0)
    al = struct.pack(">HHH", AL_VERSION, 0 if accept else 1, GCA_PROTOCOL_LEVEL)
    if not accept:
        # The status travels as a native integer (GCnaddnat in gccal.c), not
        # big-endian like the layer's other fields: little-endian for x86-64.
        al += struct.pack("<I", status)
    body = _param(SL_VERSION_PI, bytes([SL_VERSION])) + _param(SL_USER_DATA_PGI, pl + al)
    return _spdu(SPDU_AC, body)


def dn_spdu() -> bytes:
    """Session disconnect: the answer to the client's finish."""
    return _spdu(SPDU_DN, _param(SL_USER_DATA_PGI, b"\x00\x00"))


@dataclass(frozen=True, slots=True)
class Spdu:
    """A session data unit the client sent after the connect."""

    kind: int
    data: bytes  # the message units (DT, EX) or the user data (FN, AB)


def parse_spdu(spdu: bytes) -> Spdu:
    """Split a session data unit into its type and content."""
    if len(spdu) < 2:
        raise GccError("SPDU too short")
    kind = spdu[0]
    if kind in (SPDU_DT, SPDU_EX):
        # DT/EX carry their user information after a 2-byte SPDU header.
        return Spdu(kind, spdu[2:])
    return Spdu(kind, _spdu_body(spdu))


# ---------------------------------------------------------------- message units


@dataclass(frozen=True, slots=True)
class Message:
    """One whole GCA message (its body in the client's native layout)."""

    kind: int
    body: bytes
    end_of_group: bool


class MessageAssembler:
    """Joins message units (possibly spread over packets) into whole messages."""

    def __init__(self) -> None:
        self._kind: int | None = None
        self._parts: list[bytes] = []

    def feed(self, units: bytes) -> Iterator[Message]:
        """Consume the units of one SPDU; yield each message completed."""
        pos = 0
        while pos < len(units):
            if pos + UNIT_HEADER.size > len(units):
                raise GccError("truncated message unit header")
            flags, kind, length = UNIT_HEADER.unpack_from(units, pos)
            pos += UNIT_HEADER.size
            if pos + length > len(units):
                raise GccError("message unit longer than its packet")
            if self._kind is not None and kind != self._kind:
                raise GccError(f"message 0x{kind:02x} inside message 0x{self._kind:02x}")
            self._kind = kind
            self._parts.append(units[pos : pos + length])
            pos += length
            if flags & UNIT_EOD:
                yield Message(kind, b"".join(self._parts), bool(flags & UNIT_EOG))
                self._kind = None
                self._parts = []


def ends_group(kind: int) -> bool:
    """Whether a message ends the sender's group (gca_is_eog in gcautil.c)."""
    return kind not in (GCA_TDESCR_KIND, GCA_TUPLES_KIND)


GCA_TDESCR_KIND = 0x15
GCA_TUPLES_KIND = 0x16


def data_packets(client_ref: int, messages: list[tuple[int, bytes]]) -> list[bytes]:
    """Pack messages into DT packets of at most PACKET_MAX bytes.

    Several messages share a packet; a long one spans units in several
    packets, only its last unit carrying the end-of-message flag.
    """
    room = PACKET_MAX - 2 - _DT_TPDU_LEN - len(_DT_SPDU)
    packets: list[bytes] = []
    units = bytearray()
    for kind, body in messages:
        pos = 0
        while True:
            space = room - len(units) - UNIT_HEADER.size
            if space <= 0:
                packets.append(packet(dt_tpdu(client_ref, _DT_SPDU + bytes(units))))
                units.clear()
                continue
            chunk = body[pos : pos + space]
            pos += len(chunk)
            last = pos >= len(body)
            flags = (UNIT_EOD | (UNIT_EOG if ends_group(kind) else 0)) if last else 0
            units += UNIT_HEADER.pack(flags, kind, len(chunk)) + chunk
            if last:
                break
    if units:
        packets.append(packet(dt_tpdu(client_ref, _DT_SPDU + bytes(units))))
    return packets
