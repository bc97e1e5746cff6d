"""A session of Actian's real client library on the DBMS simulator.

The simulator's core (server.py) speaks its own frames (PROTOCOL.md). This
module is the front end that speaks Ingres's protocol instead: it plays the
remote communications server and the DBMS's GCA side in one, turns GCA
messages into the core's calls, and turns the core's frames (query results,
errors, events) into GCA messages. Everything the core decides - the SQL,
errors, privileges, event delivery, fault controls - is the same for both
protocols.

The listener tells the two protocols apart by their first bytes
(`gcc.looks_like_connect_request`), so one port serves both.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Protocol

from bridge.sim import gca, gcc, gccrypt, wire
from bridge.sim.sql import IngresError

if TYPE_CHECKING:
    from bridge.sim.server import Session

log = logging.getLogger("bridge.sim.gca")

_READ_SIZE = 65536
_SESSION_INFO = 0x400  # MD_ASSOC entry: "user='...',host=...", the client's OS user
_SESSION_USER = re.compile(rb"user='([^']*)'")


class Core(Protocol):
    """What a session needs of the DBMS simulator (server.SimServer)."""

    dba: str

    def check_credentials(self, user: str, password: str | None) -> IngresError | None:
        """The refusal of a login's credentials, or None."""

    def login(self, user: str, password: str | None, dbname: str, channel: GcaChannel) -> Session:
        """Open a session; raises the IngresError refusing it."""

    def execute(self, session: Session, text: bytes) -> bytes:
        """Run one statement; its response as the core's frames."""

    def logout(self, session: Session) -> None:
        """End a session."""


class GcaChannel:
    """What the core writes to a real-client session: its frames, sent as GCA messages.

    The core writes whole frames (a statement's response as one block, an
    event as one frame); each becomes GCA messages at once, so events keep
    their place in the stream relative to query results.
    """

    def __init__(self, writer: asyncio.StreamWriter, client_ref: int) -> None:
        self._writer = writer
        self._client_ref = client_ref
        self._columns: list[gca.ColumnDesc] = []
        self._rows_sent = False
        self.compressed = False  # whether the current query asked for compressed VARCHAR

    @property
    def transport(self) -> asyncio.WriteTransport:
        """The socket's transport (the core reads its buffer size and aborts it)."""
        return self._writer.transport

    async def drain(self) -> None:
        """Wait until the socket's buffer is below its high-water mark."""
        await self._writer.drain()

    def send(self, messages: list[tuple[int, bytes]]) -> None:
        """Write GCA messages, packed into packets."""
        for data in gcc.data_packets(self._client_ref, messages):
            self._writer.write(data)

    def write(self, data: bytes) -> None:
        """Translate core frames (one or more, whole) into GCA messages."""
        messages: list[tuple[int, bytes]] = []
        for kind, payload in wire.split_frames(data):
            messages.extend(self._translate(kind, payload))
            payload.end()
        self.send(messages)

    def _translate(self, kind: int, p: wire.Payload) -> list[tuple[int, bytes]]:
        if kind == wire.T_EVENT:
            ev = wire.decode_event(p)
            body = gca.event(ev.name, ev.owner, ev.database, ev.time_raw, ev.text)
            return [(gca.GCA_EVENT, body)]
        if kind == wire.T_ERROR:
            err = wire.decode_error(p)
            return [(gca.GCA_ERROR, gca.error(err.sqlstate, err.code, err.message))]
        if kind == wire.T_HEADER:
            self._columns = [
                gca.ColumnDesc(c.name, c.datatype, c.length, c.nullable)
                for c in wire.decode_header(p)
            ]
            self._rows_sent = True
            return [(gca.GCA_TDESCR, gca.tdescr(self._columns, self.compressed))]
        if kind == wire.T_ROW:
            values = wire.decode_row(p, len(self._columns))
            row = b"".join(
                gca.tuple_value(col, value, self.compressed)
                for col, value in zip(self._columns, values, strict=True)
            )
            return [(gca.GCA_TUPLES, row)]
        if kind == wire.T_DONE:
            ok = bool(p.u8())
            rowcount = p.i32()
            # A statement without rows has no row count (GCA_NO_ROW_COUNT).
            count = rowcount if ok and self._rows_sent else gca.GCA_NO_ROW_COUNT
            self._columns = []
            self._rows_sent = False
            return [(gca.GCA_RESPONSE, gca.response(ok, count))]
        raise wire.ProtocolError(f"frame {kind!r} has no GCA form")


class GcaConnection:
    """One TCP connection from the real client, from transport connect to close."""

    def __init__(
        self,
        server: Core,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self._packets = gcc.PacketBuffer()
        self._packets.feed(head)
        self._pending: list[bytes] = []
        self._assembler = gcc.MessageAssembler()
        self._queue: list[gcc.Message] = []
        self._client_ref = 0

    async def _packet(self) -> bytes:
        while not self._pending:
            self._pending.extend(self._packets.packets())
            if self._pending:
                break
            data = await self._reader.read(_READ_SIZE)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            self._packets.feed(data)
        return self._pending.pop(0)

    async def _message(self) -> gcc.Message | None:
        """The next GCA message from the client; None when it ends the session."""
        while not self._queue:
            tpdu = await self._packet()
            kind = gcc.tpdu_kind(tpdu)
            if kind == gcc.TPDU_DR:
                return None
            if kind != gcc.TPDU_DT:
                raise gcc.GccError(f"unexpected TPDU 0x{kind:02x}")
            spdu = gcc.parse_spdu(gcc.dt_payload(tpdu))
            if spdu.kind == gcc.SPDU_FN:
                # The client's finish: answer with disconnect, then it closes.
                self._writer.write(gcc.packet(gcc.dt_tpdu(self._client_ref, gcc.dn_spdu())))
                return None
            if spdu.kind == gcc.SPDU_AB:
                return None
            if spdu.kind not in (gcc.SPDU_DT, gcc.SPDU_EX):
                raise gcc.GccError(f"unexpected SPDU {spdu.kind}")
            self._queue.extend(self._assembler.feed(spdu.data))
        return self._queue.pop(0)

    async def run(self) -> None:
        """Serve the connection until the client leaves or the session is dropped."""
        cr = gcc.parse_cr(await self._packet())
        self._client_ref = cr.src_ref
        self._writer.write(gcc.packet(gcc.cc_tpdu(cr.src_ref)))
        connect = await self._session_connect()
        if connect is None:
            return
        conn, password = connect
        channel = GcaChannel(self._writer, cr.src_ref)
        session = await self._associate(conn, password, channel)
        if session is None:
            return
        try:
            await self._serve(session, channel)
        finally:
            self._server.logout(session)

    async def _session_connect(self) -> tuple[gcc.SessionConnect, str | None] | None:
        """Read the session connect and accept it, or reject bad credentials (None).

        The remote communications server validates the credentials before the
        DBMS sees the session; its refusal is an application-layer reject.
        """
        tpdu = await self._packet()
        if gcc.tpdu_kind(tpdu) != gcc.TPDU_DT:
            raise gcc.GccError("expected the session connect")
        conn = gcc.parse_cn(gcc.dt_payload(tpdu))
        password = None
        if conn.password is not None:
            password = gccrypt.decode_password(conn.password, conn.user or "")
        refusal = self._server.check_credentials(conn.user or "", password)
        code = refusal.code if refusal is not None else 0
        accept = gcc.ac_spdu(conn, refusal is None, code)
        self._writer.write(gcc.packet(gcc.dt_tpdu(self._client_ref, accept)))
        if refusal is not None:
            log.info("connect refused: user=%s: %s", conn.user, refusal.name)
            await self._writer.drain()
            return None
        return conn, password

    async def _associate(
        self, conn: gcc.SessionConnect, password: str | None, channel: GcaChannel
    ) -> Session | None:
        """GCA_ACCEPT, the client's GCA_MD_ASSOC, then the DBMS's accept or reject."""
        channel.send([(gca.GCA_ACCEPT, b"")])
        assoc = await self._message()
        if assoc is None:
            return None
        if assoc.kind != gca.GCA_MD_ASSOC:
            raise gcc.GccError(f"expected GCA_MD_ASSOC, got 0x{assoc.kind:02x}")
        parms = gca.parse_md_assoc(assoc.body)
        user = conn.user or _session_user(parms) or self._server.dba
        try:
            session = self._server.login(user, password, conn.database, channel)
        except IngresError as rejected:
            reject = gca.error(rejected.sqlstate, rejected.code, rejected.text)
            channel.send([(gca.GCA_REJECT, reject)])
            await self._writer.drain()
            return None
        channel.send([(gca.GCA_ACCEPT, b"")])
        await self._writer.drain()
        return session

    async def _serve(self, session: Session, channel: GcaChannel) -> None:
        while not session.closed:
            message = await self._message()
            if message is None:
                return
            if message.kind == gca.GCA_QUERY:
                query = gca.parse_query(message.body)
                channel.compressed = bool(query.modifier & gca.GCA_COMP_MASK)
                channel.write(self._server.execute(session, query.text))
            elif message.kind == gca.GCA_ATTENTION:
                # Every statement is answered at once, so nothing is running:
                # the interrupt is only acknowledged. Anything more than the
                # IACK would put the client's stream out of step.
                channel.send([(gca.GCA_IACK, gca.iack())])
            elif message.kind == gca.GCA_RELEASE:
                channel.send([(gca.GCA_RELEASE, gca.release())])
            else:
                raise gcc.GccError(f"unexpected GCA message 0x{message.kind:02x}")
            await self._writer.drain()


def _session_user(parms: dict[int, bytes]) -> str | None:
    match = _SESSION_USER.search(parms.get(_SESSION_INFO, b""))
    return match.group(1).decode("utf-8", "surrogateescape") if match else None
