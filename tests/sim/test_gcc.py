"""bridge.sim.gcc: the network layers, checked against the real client's bytes."""

from __future__ import annotations

import pytest

from bridge.sim import gca, gcc, wire
from tests.sim import gca_vectors as real


def test_the_real_connect_request_parses() -> None:
    cr = gcc.parse_cr(real.CR)
    assert cr.src_ref == 0
    assert cr.mask == bytes.fromhex("2bb100cd3360247d")
    assert cr.tpdu_size == gcc.TPDU_8K


def test_connect_confirm_is_the_one_the_real_client_accepted() -> None:
    assert gcc.cc_tpdu(0) == real.CC


def test_the_real_session_connect_parses() -> None:
    conn = gcc.parse_cn(gcc.dt_payload(real.CN))
    assert conn.database == "demodb"
    assert conn.user == "ingres"
    assert conn.password == bytes.fromhex("c5dec0e9c111b457")
    assert conn.architecture == real.ARCHITECTURE
    assert conn.presentation_selector == 0


def test_session_accept_echoes_the_architecture_and_answers_ingres_10_levels() -> None:
    conn = gcc.parse_cn(gcc.dt_payload(real.CN))
    ac = gcc.ac_spdu(conn, accept=True)
    assert ac[0] == gcc.SPDU_AC
    assert ac[2:5] == bytes([gcc.SL_VERSION_PI, 1, gcc.SL_VERSION])
    assert b"\xff" * 16 + real.ARCHITECTURE in ac
    # presentation version 0x0703 and requirements, application 0x0606,
    # accepted, GCA protocol level 68
    assert ac.endswith(bytes.fromhex("0703 0000 0000 0606 0000 0044"))


def test_session_reject_carries_the_status_as_a_native_integer() -> None:
    conn = gcc.parse_cn(gcc.dt_payload(real.CN))
    ac = gcc.ac_spdu(conn, accept=False, status=0x000C000B)
    assert ac.endswith(bytes.fromhex("0606 0001 0044") + (0x000C000B).to_bytes(4, "little"))


def test_protocols_are_told_apart_by_their_first_four_bytes() -> None:
    assert gcc.looks_like_connect_request(gcc.packet(real.CR)[:4])
    assert not gcc.looks_like_connect_request(wire.connect_frame("u", "p", "db")[:4])
    assert not gcc.looks_like_connect_request(wire.control_frame('{"op": "stats"}')[:4])


def test_the_real_client_messages_parse() -> None:
    assembler = gcc.MessageAssembler()
    (assoc,) = assembler.feed(gcc.parse_spdu(gcc.dt_payload(real.MD_ASSOC)).data)
    assert (assoc.kind, assoc.end_of_group) == (gca.GCA_MD_ASSOC, True)
    parms = gca.parse_md_assoc(assoc.body)
    assert parms[0x201] == b"demodb"
    assert parms[0x113] == b"GMT"
    assert b"user='root'" in parms[0x400]
    (query,) = assembler.feed(gcc.parse_spdu(gcc.dt_payload(real.QUERY_SELECT_1)).data)
    parsed = gca.parse_query(query.body)
    assert (parsed.language, parsed.modifier, parsed.text) == (2, 0x31, b"select 1")
    (auto,) = assembler.feed(gcc.parse_spdu(gcc.dt_payload(real.QUERY_AUTOCOMMIT)).data)
    assert gca.parse_query(auto.body).text == b"set autocommit on"


MESSAGES = [
    (gca.GCA_ACCEPT, b""),
    (gca.GCA_TDESCR, bytes(range(256)) * 40),  # 10 KB: spans two packets
    (gca.GCA_TUPLES, b"\x01\x00\x00\x00"),
    (gca.GCA_ERROR, b"e" * 30_000),  # over three packets
    (gca.GCA_RESPONSE, b"r" * 56),
]


@pytest.mark.parametrize("chunk", [1, 7, 8191, 100_000])
def test_messages_survive_packets_and_arbitrary_reads(chunk: int) -> None:
    packets = gcc.data_packets(0x1234, MESSAGES)
    assert all(len(p) <= gcc.PACKET_MAX for p in packets)
    assert len(packets) >= 5  # 40 KB in 8 KB packets
    stream = b"".join(packets)
    buffer = gcc.PacketBuffer()
    assembler = gcc.MessageAssembler()
    received: list[gcc.Message] = []
    for pos in range(0, len(stream), chunk):
        buffer.feed(stream[pos : pos + chunk])
        for tpdu in buffer.packets():
            assert gcc.tpdu_kind(tpdu) == gcc.TPDU_DT
            assert tpdu[2:4] == b"\x12\x34"  # the client's reference
            spdu = gcc.parse_spdu(gcc.dt_payload(tpdu))
            assert spdu.kind == gcc.SPDU_DT
            received.extend(assembler.feed(spdu.data))
    assert [(m.kind, m.body) for m in received] == MESSAGES
    # gca_is_eog: a tuple descriptor and tuples do not end the group.
    assert [m.end_of_group for m in received] == [True, False, False, True, True]


def test_a_unit_of_another_message_inside_a_message_is_refused() -> None:
    first = gcc.UNIT_HEADER.pack(0, gca.GCA_TUPLES, 2) + b"ab"
    second = gcc.UNIT_HEADER.pack(gcc.UNIT_EOD, gca.GCA_RESPONSE, 1) + b"c"
    with pytest.raises(gcc.GccError, match="inside message"):
        list(gcc.MessageAssembler().feed(first + second))


@pytest.mark.parametrize("length", [0, 2, gcc.PACKET_MAX + 3])
def test_impossible_packet_lengths_are_refused(length: int) -> None:
    buffer = gcc.PacketBuffer()
    buffer.feed(length.to_bytes(2, "little") + b"\x00" * 8)
    with pytest.raises(gcc.GccError, match="packet length"):
        list(buffer.packets())


def test_truncated_parameters_are_refused() -> None:
    with pytest.raises(gcc.GccError):
        gcc.parse_cn(bytes([gcc.SPDU_CN, 4, 0xC1, 0x10, 0, 0]))
