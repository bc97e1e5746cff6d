"""Pure functions of the simulator: the ingresdate layout, framing, the SQL parser."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime

import pytest

from bridge.sim import sql, wire


def test_ingresdate_layout() -> None:
    # 2024-02-29 13:45:07 GMT
    when = datetime(2024, 2, 29, 13, 45, 7, tzinfo=UTC).timestamp()
    raw = wire.encode_ingresdate(when + 0.9)  # Ingres keeps whole seconds
    assert len(raw) == 12
    status, highday, year, month, lowday, millis = struct.unpack("<bbhhHi", raw)
    assert status == 0x3D  # ABSOLUTE | YEARSPEC | MONTHSPEC | DAYSPEC | TIMESPEC
    assert (highday, year, month, lowday) == (0, 2024, 2, 29)
    assert millis == (13 * 3600 + 45 * 60 + 7) * 1000
    assert wire.decode_ingresdate(raw) == datetime(2024, 2, 29, 13, 45, 7, tzinfo=UTC)
    assert raw.hex(" ") == "3d 00 e8 07 02 00 1d 00 b8 6a f3 02"  # the PROTOCOL.md example


def test_ingresdate_rejects_non_absolute_dates() -> None:
    with pytest.raises(ValueError, match="absolute"):
        wire.decode_ingresdate(struct.pack("<bbhhHi", 0x02, 0, 1, 0, 0, 0))
    with pytest.raises(ValueError, match="12 bytes"):
        wire.decode_ingresdate(b"\x00" * 11)


def test_event_frame_layout() -> None:
    when = wire.encode_ingresdate(0)
    data = wire.event_frame("ev", "own", "db", when, b"t")
    assert data[4] == wire.T_EVENT
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    event = wire.decode_event(wire.Payload(data[5:]))
    assert (event.name, event.owner, event.database, event.text) == ("ev", "own", "db", b"t")
    assert event.time == datetime(1970, 1, 1, tzinfo=UTC)
    empty = wire.decode_event(wire.Payload(wire.event_frame("e", "o", "d", when, b"")[5:]))
    assert empty.text is None


async def test_read_frame_rejects_oversized_frames() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(struct.pack(">I", wire.MAX_FRAME + 1))
    with pytest.raises(wire.FrameTooLongError):
        await wire.read_frame(reader)


def test_payload_must_be_consumed_exactly() -> None:
    p = wire.Payload(wire.pack_str(b"ab") + b"x")
    assert p.str() == b"ab"
    with pytest.raises(wire.ProtocolError):
        p.end()
    with pytest.raises(wire.ProtocolError):
        p.take(5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("create dbevent Ev", sql.CreateEvent(sql.EventRef(None, "ev"))),
        ('DROP DBEVENT "Own"."Ev";', sql.DropEvent(sql.EventRef("Own", "Ev"))),
        ("register dbevent o.e", sql.RegisterEvent(sql.EventRef("o", "e"))),
        ("remove  dbevent\n e", sql.RemoveEvent(sql.EventRef(None, "e"))),
        ("raise dbevent e", sql.RaiseEvent(sql.EventRef(None, "e"), None, True)),
        ("raise dbevent e '' with noshare", sql.RaiseEvent(sql.EventRef(None, "e"), b"", False)),
        ('raise dbevent "a""b" \'x\'', sql.RaiseEvent(sql.EventRef(None, 'a"b'), b"x", True)),
        (
            "grant register, raise on dbevent e to bob, public",
            sql.GrantEvent(
                frozenset({"register", "raise"}), sql.EventRef(None, "e"), ("bob", "public")
            ),
        ),
        (
            "GRANT ALL PRIVILEGES ON DBEVENT e TO bob",
            sql.GrantEvent(
                frozenset({"register", "raise"}), sql.EventRef(None, "e"), ("bob",), True
            ),
        ),
        ("commit work", sql.EndTransaction(commit=True)),
        ("rollback", sql.EndTransaction(commit=False)),
        ("set autocommit on", sql.SetAutocommit(on=True)),
        ("SET AUTOCOMMIT OFF;", sql.SetAutocommit(on=False)),
        ("select 1", sql.SelectConstant(1)),
        ("select dbmsinfo('_version') -- comment", sql.SelectDbmsinfo("_version")),
        ("/* c */ select DBMSINFO ( 'username' )", sql.SelectDbmsinfo("username")),
    ],
)
def test_parse(text: str, expected: sql.Statement) -> None:
    assert sql.parse(text) == expected


def test_literal_bytes_round_trip() -> None:
    stmt = sql.parse(b"raise dbevent e '\xff\xfe\xc3\xa9'")
    assert isinstance(stmt, sql.RaiseEvent)
    assert stmt.text == b"\xff\xfe\xc3\xa9"


@pytest.mark.parametrize(
    ("text", "symbol"),
    [
        ("", ""),
        ("drop table t", "table"),
        ("raise dbevent", "dbevent"),
        ("select 'x'", "'x'"),
        ("grant raise on dbevent e", "e"),
        ("register dbevent e ! ", "!"),
    ],
)
def test_syntax_error_names_the_symbol(text: str, symbol: str) -> None:
    with pytest.raises(sql.IngresError) as caught:
        sql.parse(text)
    assert caught.value.name == "E_US09C4"
    assert caught.value.text == f"Syntax error on line 1.  Last symbol read was: '{symbol}'."


def test_syntax_error_counts_lines() -> None:
    with pytest.raises(sql.IngresError) as caught:
        sql.parse("register\ndbevent\n\n  e f")
    assert caught.value.text == "Syntax error on line 4.  Last symbol read was: 'f'."
