"""GCA message bodies as the simulator exchanges them with Actian's client.

Layouts are those of common/hdr/hdr/gca.h. The connection is homogeneous (the
server echoes the client's architecture vector, gcc.ac_spdu), so bodies
travel in the client's native layout: x86-64, little-endian, packed i4/i2
fields as the GCA structures lay them out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Message types (gca.h).
GCA_MD_ASSOC = 0x02
GCA_ACCEPT = 0x03
GCA_REJECT = 0x04
GCA_RELEASE = 0x05
GCA_QUERY = 0x0D
GCA_ATTENTION = 0x13
GCA_TDESCR = 0x15
GCA_TUPLES = 0x16
GCA_RESPONSE = 0x1B
GCA_ERROR = 0x1C
GCA_IACK = 0x20
GCA_EVENT = 0x28

# Data types (iicommon.h DB_*_TYPE; the OpenAPI's IIAPI_*_TYPE are the same).
DB_DTE_TYPE = 3
DB_CHA_TYPE = 20
DB_VCH_TYPE = 21
DB_INT_TYPE = 30
DB_QTXT_TYPE = 51

GCA_NAMES_MASK = 0x0001  # result modifier: column names present
GCA_COMP_MASK = 0x0010  # compressed VARCHAR, asked in the query modifier
GCA_FAIL_MASK = 0x0001  # GCA_RE_DATA.gca_rqstatus
GCA_NO_ROW_COUNT = -1

_I4 = struct.Struct("<i")
_DATA_VALUE = struct.Struct("<iii")  # gca_type, gca_precision, gca_l_value


class GcaError(Exception):
    """A GCA message body that does not parse."""


class _Reader:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise GcaError("message shorter than its fields")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def i4(self) -> int:
        value: int = _I4.unpack(self.take(4))[0]
        return value

    def data_value(self) -> tuple[int, bytes]:
        dtype, _precision, length = _DATA_VALUE.unpack(self.take(_DATA_VALUE.size))
        return dtype, self.take(length)


# ---------------------------------------------------------------- SQLSTATE


def ss_encode(sqlstate: str) -> int:
    """Encode a SQLSTATE as GCA_ERROR's gca_id_error (ss_encode in cuf/cue/ss2ge.c).

    Each of the five characters is a base-36 digit (0-9, A-Z) in 6 bits,
    first character highest.
    """
    if len(sqlstate) != 5:
        raise ValueError(f"SQLSTATE must have 5 characters: {sqlstate!r}")
    value = 0
    for char in sqlstate.upper():
        digit = int(char, 36)
        value = (value << 6) | digit
    return value


def ss_decode(encoded: int) -> str:
    """The inverse of ss_encode (ss_decode in ss2ge.c)."""
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(digits[(encoded >> shift) & 0x3F] for shift in range(24, -1, -6))


# ---------------------------------------------------------------- client messages


def parse_md_assoc(body: bytes) -> dict[int, bytes]:
    """GCA_SESSION_PARMS: index -> raw value of each user data entry."""
    r = _Reader(body)
    parms: dict[int, bytes] = {}
    for _ in range(r.i4()):
        index = r.i4()
        parms[index] = r.data_value()[1]
    return parms


@dataclass(frozen=True, slots=True)
class Query:
    """GCA_Q_DATA: language, modifier and the query text."""

    language: int
    modifier: int
    text: bytes


def parse_query(body: bytes) -> Query:
    """The query text is the data values of type DB_QTXT_TYPE, NUL-terminated."""
    r = _Reader(body)
    language = r.i4()
    modifier = r.i4()
    text = b""
    while True:
        try:
            dtype, value = r.data_value()
        except GcaError:
            break
        if dtype == DB_QTXT_TYPE:
            text += value.split(b"\x00", 1)[0]
    return Query(language, modifier, text)


# ---------------------------------------------------------------- server messages


@dataclass(frozen=True, slots=True)
class ColumnDesc:
    """One column of a GCA_TDESCR: its DB type, length (with the null byte) and name."""

    name: str
    datatype: int
    length: int
    nullable: bool

    @property
    def wire_type(self) -> int:
        """A nullable column's type is negative (iicommon.h: -DB_xxx_TYPE)."""
        return -self.datatype if self.nullable else self.datatype

    @property
    def wire_length(self) -> int:
        """The length on the wire: the value, plus 1 for the null indicator byte."""
        return self.length + (1 if self.nullable else 0)


def tdescr(columns: list[ColumnDesc], compressed: bool) -> bytes:
    """GCA_TD_DATA (GCA_TUP_DESCR) with column names."""
    modifier = GCA_NAMES_MASK | (GCA_COMP_MASK if compressed else 0)
    size = sum(c.wire_length for c in columns)
    parts = [struct.pack("<iiIi", size, modifier, 0, len(columns))]
    for col in columns:
        name = col.name.encode()
        parts.append(struct.pack("<iihhi", 0, col.wire_length, col.wire_type, 0, len(name)))
        parts.append(name)
    return b"".join(parts)


def tuple_value(col: ColumnDesc, value: bytes | None, compressed: bool) -> bytes:
    """One column of a row.

    VARCHAR as i2 length + bytes (padded unless compressed), then the null
    indicator byte for a nullable column (adf.h ADF_NVL_BIT 0x01).
    """
    if col.datatype == DB_VCH_TYPE:
        data = value or b""
        out = struct.pack("<h", len(data)) + data
        if not compressed:
            out += b"\x00" * (col.length - len(out))
    else:
        out = value if value is not None else b"\x00" * col.length
    if col.nullable:
        out += b"\x01" if value is None else b"\x00"
    return out


def response(ok: bool, rowcount: int) -> bytes:
    """GCA_RE_DATA: ten i4 fields and the 16-byte logical key."""
    status = 0 if ok else GCA_FAIL_MASK
    return struct.pack("<10i", 0, status, rowcount, 0, 0, 0, 0, 0, 0, 0) + b"\x00" * 16


def error(sqlstate: str, code: int, text: str) -> bytes:
    """GCA_ER_DATA with one element: SQLSTATE encoded, local error, the message.

    The message travels as the DBMS formats it, "E_XX0000 text": without the
    GCA_ERFORMATTED severity bit the OpenAPI drops everything up to the word
    after the error name (serverErrorText in aip/apierhnd.c).
    """
    message = f"{error_name(code)} {text}".encode("utf-8", "surrogateescape")
    return (
        struct.pack("<iiiiiii", 1, ss_encode(sqlstate), 0, 0, 0, code, 1)
        + _DATA_VALUE.pack(DB_CHA_TYPE, 0, len(message))
        + message
    )


_FACILITIES = {0x00: "US", 0x05: "PS", 0x06: "QE", 0x0C: "GC", 0x02: "SC"}


def error_name(code: int) -> str:
    """E_<facility><number>, as erxxx.msg names the error `code` (facility << 16 | number)."""
    facility = _FACILITIES.get(code >> 16, "??")
    return f"E_{facility}{code & 0xFFFF:04X}"


def event(name: str, owner: str, database: str, when: bytes, text: bytes | None) -> bytes:
    """GCA_EV_DATA: names, the time (DB_DTE_TYPE) and the text as one VARCHAR, if any."""

    def gca_name(value: str) -> bytes:
        raw = value.encode("utf-8", "surrogateescape")
        return _I4.pack(len(raw)) + raw

    parts = [gca_name(name), gca_name(owner), gca_name(database)]
    parts.append(_DATA_VALUE.pack(DB_DTE_TYPE, 0, len(when)) + when)
    if text:
        value = struct.pack("<h", len(text)) + text
        parts.append(_I4.pack(1) + _DATA_VALUE.pack(DB_VCH_TYPE, 0, len(value)) + value)
    else:
        parts.append(_I4.pack(0))
    return b"".join(parts)


def iack() -> bytes:
    """GCA_AK_DATA: the answer to GCA_ATTENTION."""
    return _I4.pack(0)


def release() -> bytes:
    """GCA_ER_DATA without elements: the server's side of GCA_RELEASE."""
    return _I4.pack(0)
