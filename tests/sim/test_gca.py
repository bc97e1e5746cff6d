"""bridge.sim.gca (GCA message bodies) and bridge.sim.gccrypt (the password)."""

from __future__ import annotations

import struct

import pytest

from bridge.sim import gca, gccrypt, wire
from tests.sim import gca_vectors as real


@pytest.mark.parametrize("sqlstate", ["00000", "42502", "42505", "08004", "01007", "50000"])
def test_sqlstate_encoding_round_trips(sqlstate: str) -> None:
    assert gca.ss_decode(gca.ss_encode(sqlstate)) == sqlstate


def test_sqlstate_encoding_is_six_bits_per_base36_digit() -> None:
    assert gca.ss_encode("00000") == 0
    assert gca.ss_encode("0000Z") == 35
    assert gca.ss_encode("42502") == (((4 * 64 + 2) * 64 + 5) * 64 + 0) * 64 + 2


def test_tuple_descriptor_layout() -> None:
    col = gca.ColumnDesc("col1", gca.DB_INT_TYPE, 4, nullable=False)
    assert gca.tdescr([col], compressed=False) == (
        struct.pack("<iiIi", 4, gca.GCA_NAMES_MASK, 0, 1)
        + struct.pack("<iihhi", 0, 4, gca.DB_INT_TYPE, 0, 4)
        + b"col1"
    )


def test_a_nullable_column_has_a_negative_type_and_a_null_byte() -> None:
    col = gca.ColumnDesc("c", gca.DB_VCH_TYPE, 10, nullable=True)
    descr = gca.tdescr([col], compressed=True)
    size, modifier = struct.unpack_from("<ii", descr)
    assert size == 11
    assert modifier == gca.GCA_NAMES_MASK | gca.GCA_COMP_MASK
    _, length, dtype, _, _ = struct.unpack_from("<iihhi", descr, 16)
    assert (length, dtype) == (11, -gca.DB_VCH_TYPE)
    assert gca.tuple_value(col, None, compressed=True) == b"\x00\x00\x01"
    assert gca.tuple_value(col, b"ab", compressed=True) == b"\x02\x00ab\x00"
    assert gca.tuple_value(col, b"ab", compressed=False) == b"\x02\x00ab" + b"\x00" * 6 + b"\x00"


def test_response_layout() -> None:
    ok = gca.response(True, gca.GCA_NO_ROW_COUNT)
    assert len(ok) == 56
    assert struct.unpack_from("<iii", ok) == (0, 0, -1)
    failed = gca.response(False, gca.GCA_NO_ROW_COUNT)
    assert struct.unpack_from("<ii", failed)[1] == gca.GCA_FAIL_MASK


def test_error_carries_sqlstate_code_and_the_named_message() -> None:
    body = gca.error("42502", 0x0006020C, "REGISTER DBEVENT: Dbevent 'a.b' ...")
    count, id_error, _server, _type, severity, local, nparms = struct.unpack_from("<7i", body)
    assert (count, severity, local, nparms) == (1, 0, 0x0006020C, 1)
    assert gca.ss_decode(id_error) == "42502"
    dtype, _prec, length = struct.unpack_from("<iii", body, 28)
    assert dtype == gca.DB_CHA_TYPE
    # The OpenAPI strips what comes before the first word after E_xxnnnn.
    assert body[40 : 40 + length] == b"E_QE020C REGISTER DBEVENT: Dbevent 'a.b' ..."


@pytest.mark.parametrize(
    ("code", "name"),
    [(0x0006020C, "E_QE020C"), (0x00050D3B, "E_PS0D3B"), (0x000009C4, "E_US09C4"),
     (0x000C000B, "E_GC000B"), (0x00000010, "E_US0010")],
)  # fmt: skip
def test_error_names(code: int, name: str) -> None:
    assert gca.error_name(code) == name


def test_event_layout() -> None:
    when = wire.encode_ingresdate(0)
    body = gca.event("ev", "ingres", "demodb", when, b"hi")
    expected = (
        struct.pack("<i", 2) + b"ev" + struct.pack("<i", 6) + b"ingres"
        + struct.pack("<i", 6) + b"demodb"
        + struct.pack("<iii", gca.DB_DTE_TYPE, 0, 12) + when
        + struct.pack("<i", 1) + struct.pack("<iii", gca.DB_VCH_TYPE, 0, 4) + b"\x02\x00hi"
    )  # fmt: skip
    assert body == expected
    assert gca.event("ev", "o", "d", when, None).endswith(when + struct.pack("<i", 0))


@pytest.mark.parametrize(("user", "password", "mask", "cipher"), real.PASSWORDS)
def test_passwords_the_real_client_sent_decode(
    user: str, password: str, mask: bytes | None, cipher: bytes
) -> None:
    assert gccrypt.decode_password(cipher, user, mask) == password


def test_the_cipher_is_eight_round_des_not_fips_des() -> None:
    key, block = bytes.fromhex("133457799BBCDFF1"), bytes.fromhex("0123456789ABCDEF")
    encrypted = gccrypt.ci_block(key, block, decrypt=False)
    assert encrypted != bytes.fromhex("85E813540F0AB405")  # the FIPS 46 example
    assert gccrypt.ci_block(key, encrypted, decrypt=True) == block


def test_a_password_of_a_partial_block_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        gccrypt.decode_password(b"\x00" * 7, "ingres")
