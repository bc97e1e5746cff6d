"""The simulator's Ingres-protocol front end (bridge.sim.gcasession), without the real client.

The connect replays the bytes Actian's library sent (gca_vectors.py); later
messages are built per gca.h. The same checks run against the real library in
test_gca_real_client.py (opt-in).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest

from bridge.sim import gca, gcc, wire
from bridge.sim.server import SimServer
from tests.sim import gca_vectors as real


def _query(text: str, modifier: int = 0x31) -> bytes:
    raw = text.encode() + b"\x00"
    return (
        struct.pack("<ii", 2, modifier) + struct.pack("<iii", gca.DB_QTXT_TYPE, 0, len(raw)) + raw
    )


class Client:
    """The client side, a packet at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.packets = gcc.PacketBuffer()
        self.assembler = gcc.MessageAssembler()
        self.messages: list[gcc.Message] = []

    async def packet(self) -> bytes:
        while True:
            for p in self.packets.packets():
                return p
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            if not data:
                raise ConnectionError("server closed")
            self.packets.feed(data)

    async def spdu(self) -> gcc.Spdu:
        return gcc.parse_spdu(gcc.dt_payload(await self.packet()))

    async def message(self) -> gcc.Message:
        while not self.messages:
            spdu = await self.spdu()
            assert spdu.kind == gcc.SPDU_DT
            self.messages.extend(self.assembler.feed(spdu.data))
        return self.messages.pop(0)

    def send_tpdu(self, tpdu: bytes) -> None:
        self.writer.write(gcc.packet(tpdu))

    def send(self, kind: int, body: bytes, spdu: int = gcc.SPDU_DT) -> None:
        unit = gcc.UNIT_HEADER.pack(gcc.UNIT_EOD | gcc.UNIT_EOG, kind, len(body)) + body
        self.send_tpdu(gcc.dt_tpdu(gcc.SERVER_REF, bytes([spdu, 0]) + unit))

    async def run(self, text: str) -> list[gcc.Message]:
        """A query and every message up to its GCA_RESPONSE."""
        self.send(gca.GCA_QUERY, _query(text))
        out = [await self.message()]
        while out[-1].kind != gca.GCA_RESPONSE:
            out.append(await self.message())
        return out

    async def closed(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), 10) == b""
        except ConnectionError:
            return True


_OPEN: list[Client] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _OPEN:
        writer = _OPEN.pop().writer
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _open(server: SimServer) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    client = Client(reader, writer)
    _OPEN.append(client)
    client.send_tpdu(real.CR)
    assert await client.packet() == real.CC
    client.send_tpdu(real.CN)
    return client


async def _connect(server: SimServer) -> Client:
    client = await _open(server)
    accept = await client.spdu()
    assert accept.kind == gcc.SPDU_AC
    assert (await client.message()).kind == gca.GCA_ACCEPT
    client.send_tpdu(real.MD_ASSOC)
    assert (await client.message()).kind == gca.GCA_ACCEPT
    return client


@pytest.fixture
async def server() -> AsyncIterator[SimServer]:
    async with SimServer() as s:
        yield s


async def test_the_real_clients_connect_is_accepted_and_answered(server: SimServer) -> None:
    client = await _connect(server)
    assert server.stats()["sessions"] == 1
    (response,) = await client.run("set autocommit on")
    assert struct.unpack_from("<iii", response.body) == (0, 0, gca.GCA_NO_ROW_COUNT)
    descr, row, done = await client.run("select 1")
    assert (descr.kind, row.kind, done.kind) == (gca.GCA_TDESCR, gca.GCA_TUPLES, gca.GCA_RESPONSE)
    size = struct.unpack_from("<i", descr.body)[0]
    assert int.from_bytes(row.body, "little") == 1
    assert len(row.body) == size
    assert struct.unpack_from("<i", done.body, 8)[0] == 1


async def test_errors_are_gca_errors_and_the_statement_fails(server: SimServer) -> None:
    client = await _connect(server)
    error, response = await client.run("raise dbevent nosuch")
    assert error.kind == gca.GCA_ERROR
    _, id_error, _, _, _, local = struct.unpack_from("<6i", error.body)
    assert (gca.ss_decode(id_error), local) == ("42505", 0x00050D3B)
    assert struct.unpack_from("<ii", response.body)[1] == gca.GCA_FAIL_MASK


async def test_events_reach_an_idle_session_and_a_raising_one(server: SimServer) -> None:
    listener = await _connect(server)
    raiser = await _connect(server)
    await listener.run("create dbevent ev")
    await listener.run("register dbevent ev")
    await raiser.run("register dbevent ev")
    (response,) = await raiser.run("raise dbevent ev 'hello'")
    assert response.kind == gca.GCA_RESPONSE
    # A SHARE event comes from the event thread, after the RAISE's reply (sce.c);
    # the listener sent nothing: the event is pushed to it too.
    event = await raiser.message()
    assert event.kind == gca.GCA_EVENT
    pushed = await listener.message()
    assert pushed.kind == gca.GCA_EVENT
    assert pushed.body == event.body
    assert pushed.body.endswith(b"\x05\x00hello")


async def test_attention_gets_an_interrupt_ack_and_nothing_else(server: SimServer) -> None:
    client = await _connect(server)
    client.send(gca.GCA_ATTENTION, struct.pack("<i", 0), spdu=gcc.SPDU_EX)
    ack = await client.message()
    assert (ack.kind, ack.body) == (gca.GCA_IACK, b"\x00\x00\x00\x00")
    (response,) = await client.run("commit")
    assert response.kind == gca.GCA_RESPONSE


async def test_release_then_finish_ends_the_session(server: SimServer) -> None:
    client = await _connect(server)
    client.send(gca.GCA_RELEASE, struct.pack("<i", 0))
    assert (await client.message()).kind == gca.GCA_RELEASE
    client.send_tpdu(gcc.dt_tpdu(gcc.SERVER_REF, bytes([gcc.SPDU_FN, 4, 0xC1, 2, 0, 0])))
    assert (await client.spdu()).kind == gcc.SPDU_DN
    # The server ends the session, then closes the socket.
    assert await client.closed()
    assert server.stats()["sessions"] == 0


@pytest.mark.parametrize(
    ("users", "accepted"), [({"ingres": "secret"}, True), ({"ingres": "x"}, False)]
)
async def test_the_encrypted_password_is_checked(users: dict[str, str], accepted: bool) -> None:
    async with SimServer(users=users) as server:
        client = await _open(server)
        spdu = await client.spdu()
        assert spdu.kind == gcc.SPDU_AC
        result, _level = struct.unpack_from(
            ">HH", spdu.data, len(spdu.data) - (4 if accepted else 8)
        )
        assert result == (0 if accepted else 1)
        if not accepted:
            assert spdu.data[-4:] == (0x000C000B).to_bytes(4, "little")
            assert await client.closed()
            assert server.stats()["connects"] == 0


async def test_an_unknown_database_is_rejected_by_the_dbms() -> None:
    async with SimServer(databases=["otherdb"]) as server:
        client = await _open(server)
        assert (await client.spdu()).kind == gcc.SPDU_AC
        assert (await client.message()).kind == gca.GCA_ACCEPT
        client.send_tpdu(real.MD_ASSOC)
        reject = await client.message()
        assert reject.kind == gca.GCA_REJECT
        assert b"Database does not exist: 'demodb'." in reject.body
        assert await client.closed()


async def test_our_own_protocol_still_works_on_the_same_port(server: SimServer) -> None:
    ours = await wire.SimClient.connect("127.0.0.1", server.port)
    theirs = await _connect(server)
    result = await ours.ok("select 1")
    assert result.rows
    await theirs.run("select 1")
    await ours.close()
