"""The DBMS simulator.

An asyncio TCP server speaking PROTOCOL.md, to our own libiiapi.1.so and
(through gcasession.py) to Actian's real client library.

It models what an Ingres DBMS server does with DBEvents, as documented by
Actian and as the Ingres source (fosslc/Ingres) implements it:

* dbevents live in a database, owned by their creator (the schema);
  unqualified names resolve to the current user's event, then the DBA's;
* REGISTER/RAISE need ownership or a GRANT to the user or PUBLIC;
* a NOSHARE raise is queued at once to the raising session, if registered,
  ahead of the RAISE statement's reply; a SHARE raise goes through the
  server's event thread (`sce_raise` broadcasts it, `sce_thread` queues it to
  every session registered when it is dispatched, the raiser included; sce.c),
  so it is written after the RAISE's reply, `delay` ms later when a delay is
  set; either way the event is not transactional and not durable;
* the event is stamped when it is raised, with the DBMS clock (`adu_datenow`
  in qeaevent.c), which `clock_offset` can set apart from the host's clock;
* name, owner and database reach the client cut at their first blank
  (`sce_gcevent` in scenotify.c: Ingres names are blank-padded);
* `SELECT <integer>` types the literal as the smallest Ingres integer that
  holds it: `SELECT 1` is an INTEGER2 of length 2, as the real server answers;
* DROP DBEVENT leaves existing registrations in place (SQL reference, "Drop
  Dbevent"): they see the event again if it is re-created;
* event text is bytes, cut silently at DB_EVDATA_MAX (256) bytes; empty text
  is "no text".

Errors (ge_errorCode = facility << 16 | number; texts and SQLSTATEs from the
message files named; which error applies when, from the code named):

=========  ==========  =====  ==============================================
name       code        state  when
=========  ==========  =====  ==============================================
E_US09C4   0x000009C4  42000  statement not understood (erusf.msg)
E_US0010   0x00000010  08004  CONNECT to an unknown database (erusf.msg)
E_GC000B   0x000C000B  50000  CONNECT with a wrong password (ergcf.msg)
E_QE020A   0x0006020A  42502  CREATE DBEVENT of an existing one (erqef.msg)
E_QE020B   0x0006020B  42505  DROP DBEVENT of none of the user's (erqef.msg)
E_QE020C   0x0006020C  42502  REGISTER twice (erqef.msg)
E_QE020D   0x0006020D  42505  REMOVE of an unregistered event (erqef.msg)
E_PS0D3B   0x00050D3B  42505  unqualified name found nowhere (psyevent.c)
E_US088F   0x0000088F  42000  owner.name not found, or GRANT by a user
                              holding no privilege on it (psyevent.c)
E_PS0D3C   0x00050D3C  42503  REGISTER/RAISE without the privilege
E_PS0551   0x00050551  01007  GRANT by a non-owner holding some privilege
E_PS0563   0x00050563  01007  GRANT ALL by a non-owner holding some
E_PS0420   0x00050420  42503  DROP DBEVENT other.name (pslsgram.yi)
E_PS0421   0x00050421  42503  CREATE DBEVENT other.name (pslsgram.yi)
E_PS0D35   0x00050D35  42000  GRANT of another privilege on a dbevent
E_PS0D36   0x00050D36  42000  RAISE DBEVENT text given as a bare name
E_PS0D38   0x00050D38  42000  RAISE DBEVENT ... WITH <not [NO]SHARE>
=========  ==========  =====  ==============================================

The per-session queue: Ingres keeps undelivered notifications in SCF memory
shared by the server; when it is exhausted the notification is not queued
for that session and E_SC0283 is written to the error log (sce.c,
erscf.msg). Here the queue is the session's socket write buffer; beyond
`queue_limit` bytes the event is dropped for that session, logged with
E_SC0283 and counted in `stats()["events_dropped"]`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar

from bridge.sim import gca, gcc, sql, wire
from bridge.sim.gcasession import GcaConnection
from bridge.sim.sql import IngresError

log = logging.getLogger("bridge.sim")

DB_EVDATA_MAX = 256  # iicommon.h: the longest dbevent text; longer is cut
DEFAULT_VERSION = "II 10.2.0 (a64.lnx/100)"
DEFAULT_QUEUE_LIMIT = 64 << 20
DBMSINFO_LENGTH = 64  # declared VARCHAR length of a dbmsinfo() column
CATALOG_OWNER = "$ingres"  # owner of system objects, searched after the DBA

EventKey = tuple[str, str]  # (owner, name)


class Channel(Protocol):
    """Where a session's frames go.

    The socket's StreamWriter for our own protocol, a `gcasession.GcaChannel`
    translating them for the real client.
    """

    @property
    def transport(self) -> asyncio.WriteTransport:
        """The socket's transport: its buffer size, closing state, abort."""

    def write(self, data: bytes) -> None:
        """Send whole frames."""

    async def drain(self) -> None:
        """Wait for the socket's buffer to drain."""

T = TypeVar("T")
Job = Coroutine[Any, Any, None]


@dataclass(slots=True)
class DbEvent:
    """One dbevent of a database and the privileges granted on it."""

    owner: str
    name: str
    grants: dict[str, set[str]] = field(default_factory=dict)  # grantee -> privileges

    def allows(self, user: str, privilege: str) -> bool:
        """Whether `user` may use `privilege` ('register' or 'raise')."""
        if user == self.owner:
            return True
        return any(privilege in self.grants.get(grantee, set()) for grantee in (user, "public"))


@dataclass(slots=True)
class Database:
    """A database: its DBA, its dbevents and who is registered for them."""

    name: str
    dba: str
    events: dict[EventKey, DbEvent] = field(default_factory=dict)
    registered: dict[EventKey, set[Session]] = field(default_factory=dict)


class Session:
    """One connected client session."""

    __slots__ = ("closed", "database", "id", "registrations", "user", "warned", "writer")

    def __init__(self, sid: int, user: str, database: Database, writer: Channel) -> None:
        self.id = sid
        self.user = user
        self.database = database
        self.writer = writer
        self.registrations: set[EventKey] = set()
        self.closed = False
        self.warned = False

    def __hash__(self) -> int:
        return self.id

    def buffered(self) -> int:
        """Bytes written to this session's socket but not yet sent."""
        return self.writer.transport.get_write_buffer_size()


@dataclass(slots=True)
class _Pending:
    """An event held back by the delivery delay."""

    due: float
    targets: list[Session]
    data: bytes


class SimServer:
    """The DBMS simulator; every method runs on the server's event loop.

    `databases` None accepts any database name (created on first use);
    `users` None accepts any user and password, else maps user -> password.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        databases: Iterable[str] | None = None,
        dba: str = "ingres",
        users: Mapping[str, str] | None = None,
        version: str = DEFAULT_VERSION,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        clock_offset: float = 0.0,
    ) -> None:
        self.host = host
        self._port = port
        self.dba = dba
        self.users = dict(users) if users is not None else None
        self.version = version
        self.queue_limit = queue_limit
        self._known = set(databases) if databases is not None else None
        self._databases: dict[str, Database] = {}
        self._sessions: dict[int, Session] = {}
        self._ids = itertools.count(1)
        self._listener: asyncio.Server | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._delay = 0.0
        self.clock_offset = clock_offset  # seconds the DBMS clock runs ahead of the host's
        self._pending: deque[_Pending] = deque()
        self._pump: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conns: set[asyncio.StreamWriter] = set()
        self._raised = 0
        self._delivered = 0
        self._dropped = 0
        self._connects = 0
        self._stopping = False

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The TCP port (the bound one once started with port 0)."""
        return self._port

    @property
    def listening(self) -> bool:
        """Whether new connections are accepted right now."""
        return self._listener is not None

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._stopping = False
        await self._listen()
        log.info("dbmssim listening on %s:%d", self.host, self._port)

    async def _listen(self) -> None:
        if self._listener is not None or self._stopping:
            return
        listener = await asyncio.start_server(
            self._handle, self.host, self._port, reuse_address=True
        )
        # start_server yields after binding: a stop() (or another _listen) that
        # ran meanwhile would otherwise leave this listener open with no owner,
        # a socket nobody closes (refuse(0) and the reopen timer listen in a task).
        if self._stopping or self._listener is not None:
            listener.close()
            return
        self._listener = listener
        self._port = listener.sockets[0].getsockname()[1]

    def _close_listener(self) -> None:
        if self._listener is not None:
            # close() stops accepting; wait_closed() is not awaited because
            # from Python 3.12 it waits for every session to end.
            self._listener.close()
            self._listener = None

    async def stop(self) -> None:
        """Stop accepting, end every session and cancel pending work."""
        self._stopping = True
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        self._close_listener()
        self.drop_sessions(reason="server stopping")
        for writer in list(self._conns):
            writer.transport.abort()
        if self._pump is not None:
            self._pump.cancel()
        # Aborted connections end their handlers; give them a moment first.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pending.clear()
        log.info("dbmssim stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def session(self, user: str = "ingres", database: str = "demodb") -> wire.SimClient:
        """A protocol client session on this server (any password unless `users`)."""
        password = self.users.get(user, "") if self.users is not None else "x"
        host = self.host if self.host not in ("", "0.0.0.0") else "127.0.0.1"
        return await wire.SimClient.connect(host, self._port, user, password, database)

    # ------------------------------------------------------------ faults

    def drop_sessions(self, reason: str = "fault: drop sessions") -> int:
        """Abort every session's socket at once; returns how many."""
        sessions = list(self._sessions.values())
        for session in sessions:
            self._end_session(session)
            session.writer.transport.abort()
        if sessions or reason.startswith("fault"):
            log.info("%s: %d session(s) dropped", reason, len(sessions))
        return len(sessions)

    def refuse(self, seconds: float) -> None:
        """Close the listener for `seconds` (connects get ECONNREFUSED); 0 ends it."""
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if seconds <= 0:
            log.info("fault: refusing ended")
            self._spawn(self._listen())
            return
        self._close_listener()
        log.info("fault: refusing new connections for %.3fs", seconds)
        loop = asyncio.get_running_loop()
        self._reopen = loop.call_later(seconds, self._reopen_now)

    def _reopen_now(self) -> None:
        self._reopen = None
        if not self._stopping:
            self._spawn(self._listen_logged())

    async def _listen_logged(self) -> None:
        await self._listen()
        log.info("dbmssim listening again on %s:%d", self.host, self._port)

    def set_delay(self, ms: float) -> None:
        """Make the event thread hand SHARE events over `ms` milliseconds late; 0 ends it."""
        self._delay = max(0.0, ms) / 1000.0
        log.info("fault: event thread delay %.0f ms", ms)

    def set_clock_offset(self, seconds: float) -> None:
        """Run the DBMS clock `seconds` ahead of the host's (negative: behind)."""
        self.clock_offset = seconds
        log.info("fault: DBMS clock offset %+.3fs", seconds)

    def now(self) -> float:
        """The DBMS clock: POSIX seconds, the host's time plus `clock_offset`."""
        return time.time() + self.clock_offset

    async def go_down(self) -> None:
        """First half of a restart: drop every session and close the listener."""
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        self._close_listener()
        self.drop_sessions(reason="fault: restart")

    async def restart(self, down_seconds: float) -> None:
        """Drop every session, close the listener, listen again after `down_seconds`."""
        await self.go_down()
        log.info("fault: down for %.3fs", down_seconds)
        await asyncio.sleep(down_seconds)
        if not self._stopping:
            await self._listen_logged()

    def stats(self) -> dict[str, Any]:
        """Counters and the dbevents of every database (JSON-friendly)."""
        return {
            "sessions": len(self._sessions),
            "connections": len(self._conns),
            "registrations": sum(len(s.registrations) for s in self._sessions.values()),
            "connects": self._connects,
            "events_raised": self._raised,
            "events_delivered": self._delivered,
            "events_dropped": self._dropped,
            "events_pending": sum(len(p.targets) for p in self._pending),
            "listening": self.listening,
            "port": self._port,
            "delay_ms": self._delay * 1000.0,
            "clock_offset": self.clock_offset,
            "dbevents": [
                {"database": db.name, "owner": ev.owner, "name": ev.name}
                for db in self._databases.values()
                for ev in db.events.values()
            ],
        }

    # ------------------------------------------------------------ helpers for tests

    def create_event(self, owner: str, name: str, database: str = "demodb") -> None:
        """CREATE DBEVENT owner.name in `database` (no error if it exists)."""
        db = self._database(database)
        db.events.setdefault((owner, name), DbEvent(owner, name))

    def grant(
        self,
        owner: str,
        name: str,
        grantee: str,
        privileges: Iterable[str],
        database: str = "demodb",
    ) -> None:
        """GRANT privileges ('register', 'raise') on owner.name to grantee ('public')."""
        event = self._database(database).events[(owner, name)]
        event.grants.setdefault(grantee, set()).update(privileges)

    def raise_event(
        self,
        owner: str,
        name: str,
        text: bytes | None = None,
        share: bool = True,
        database: str = "demodb",
    ) -> int:
        """RAISE DBEVENT owner.name as no session; returns how many sessions it targets.

        NOSHARE from outside any session reaches nobody, as in Ingres.
        """
        db = self._database(database)
        if (owner, name) not in db.events:
            raise KeyError(f"dbevent {owner}.{name} does not exist in {database}")
        return self._raise(db, db.events[(owner, name)], text, share, None)

    # ------------------------------------------------------------ connections

    def _spawn(self, coro: Job) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _database(self, name: str) -> Database:
        db = self._databases.get(name)
        if db is None:
            db = self._databases[name] = Database(name, self.dba)
        return db

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._conns.add(writer)
        try:
            head = await reader.readexactly(4)
            if gcc.looks_like_connect_request(head):
                await GcaConnection(self, head, reader, writer).run()
                return
            ftype, payload = await wire.read_frame(reader, head)
            if ftype == wire.T_CONTROL:
                await self._control(payload, writer)
            elif ftype == wire.T_CONNECT:
                await self._session(payload, reader, writer)
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            wire.ProtocolError,
            gcc.GccError,
            gca.GcaError,
        ) as exc:
            log.debug("connection ended: %r", exc)
        except asyncio.CancelledError:
            # stop() cancels connection handlers; the handler is the top of its
            # task, so ending quietly is the whole of the cleanup.
            log.debug("connection handler cancelled")
        finally:
            self._conns.discard(writer)
            # close() flushes what is buffered (a DONE, a CONTROL reply) first;
            # after drop_sessions() the transport is already aborted.
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _session(
        self, payload: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        p = wire.Payload(payload)
        user = p.str().decode("utf-8", "surrogateescape")
        password = p.str().decode("utf-8", "surrogateescape")
        dbname = p.str().decode("utf-8", "surrogateescape")
        p.end()
        try:
            session = self.login(user, password, dbname, writer)
        except IngresError as refusal:
            writer.write(_error(refusal) + wire.done_frame(False))
            await writer.drain()
            return
        writer.write(wire.accept_frame(self.version, dbname, user))
        try:
            await writer.drain()
            await self._serve(session, reader)
        finally:
            self.logout(session)

    def login(self, user: str, password: str | None, dbname: str, channel: Channel) -> Session:
        """Open a session for either protocol; raises the IngresError refusing it.

        `password` None: the client sent none.
        """
        refusal = self._check_login(user, password, dbname)
        if refusal is not None:
            log.info("connect refused: user=%s database=%s: %s", user, dbname, refusal.name)
            raise refusal
        session = Session(next(self._ids), user, self._database(dbname), channel)
        self._sessions[session.id] = session
        self._connects += 1
        log.info("session %d connected: user=%s database=%s", session.id, user, dbname)
        return session

    def logout(self, session: Session) -> None:
        """End a session opened by `login` (its client left or was dropped)."""
        if not session.closed:
            self._end_session(session)
        log.info("session %d disconnected", session.id)

    def check_credentials(self, user: str, password: str | None) -> IngresError | None:
        """E_GC000B when passwords are enforced and this one (None: none sent) is wrong."""
        if self.users is not None and (password is None or self.users.get(user) != password):
            return sql.ingres_error("E_GC000B")
        return None

    def _check_login(self, user: str, password: str | None, dbname: str) -> IngresError | None:
        refusal = self.check_credentials(user, password)
        if refusal is not None:
            return refusal
        if self._known is not None and dbname not in self._known:
            return sql.ingres_error("E_US0010", dbname)
        return None

    def _end_session(self, session: Session) -> None:
        """Forget a session: its registrations and whatever it had queued."""
        session.closed = True
        self._sessions.pop(session.id, None)
        for key in session.registrations:
            holders = session.database.registered.get(key)
            if holders is not None:
                holders.discard(session)
                if not holders:
                    del session.database.registered[key]
        session.registrations.clear()

    async def _serve(self, session: Session, reader: asyncio.StreamReader) -> None:
        while not session.closed:
            ftype, payload = await wire.read_frame(reader)
            if ftype == wire.T_BYE:
                return
            if ftype != wire.T_QUERY:
                raise wire.ProtocolError(f"unexpected frame {ftype!r} in a session")
            p = wire.Payload(payload)
            text = p.lstr()
            p.end()
            session.writer.write(self.execute(session, text))
            await session.writer.drain()

    # ------------------------------------------------------------ statements

    def execute(self, session: Session, text: bytes) -> bytes:
        """Run one statement; returns the whole response (up to DONE) as frames."""
        try:
            stmt = sql.parse(text)
            return self._run(session, stmt)
        except IngresError as err:
            log.debug("session %d: %s %s", session.id, err.name, err.text)
            return _error(err) + wire.done_frame(False)

    def _run(self, session: Session, stmt: sql.Statement) -> bytes:
        match stmt:
            case sql.CreateEvent(ref):
                self._create(session, ref)
            case sql.DropEvent(ref):
                self._drop(session, ref)
            case sql.RegisterEvent(ref):
                self._register(session, ref)
            case sql.RemoveEvent(ref):
                self._remove(session, ref)
            case sql.RaiseEvent(ref, text, share):
                event = self._resolve(session, ref, "RAISE DBEVENT")
                self._require(session, event, "raise")
                self._raise(session.database, event, text, share, session)
            case sql.GrantEvent():
                self._grant(session, stmt)
            case sql.SelectConstant(value):
                return self._rows(wire.IIAPI_INT_TYPE, *_integer(value))
            case sql.SelectDbmsinfo(request):
                info = self._dbmsinfo(session, request).encode("utf-8", "surrogateescape")
                return self._rows(wire.IIAPI_VCH_TYPE, DBMSINFO_LENGTH + 2, info)
            case _:
                pass  # COMMIT, ROLLBACK, SET AUTOCOMMIT: nothing to undo or keep
        return wire.done_frame(True, 0)

    @staticmethod
    def _rows(datatype: int, length: int, value: bytes) -> bytes:
        column = wire.Column("col1", datatype, length, False)
        return wire.header_frame([column]) + wire.row_frame([value]) + wire.done_frame(True, 1)

    def _dbmsinfo(self, session: Session, request: str) -> str:
        values = {
            "_version": self.version,
            "database": session.database.name,
            "username": session.user,
            "session_user": session.user,
            "system_user": session.user,
            "dba": session.database.dba,
            "session_id": f"{session.id:016x}",
            "_bintim": str(int(self.now())),
            "autocommit_state": "0",
        }
        # Unknown request names give an empty string, as dbmsinfo() does.
        return values.get(request.lower(), "")[:DBMSINFO_LENGTH]

    def _resolve(self, session: Session, ref: sql.EventRef, statement: str) -> DbEvent:
        """Find the event a statement names (psy_gevent in psyevent.c).

        Unqualified: the user's, then the DBA's, then $ingres'; not found is
        E_PS0D3B. Qualified: that schema's only; not found is E_US088F.
        """
        events = session.database.events
        if ref.owner is not None:
            event = events.get((ref.owner, ref.name))
            if event is None:
                raise sql.ingres_error("E_US088F", statement, ref.owner, ref.name)
            return event
        for owner in (session.user, session.database.dba, CATALOG_OWNER):
            event = events.get((owner, ref.name))
            if event is not None:
                return event
        raise sql.ingres_error("E_PS0D3B", statement, ref.name)

    @staticmethod
    def _require(session: Session, event: DbEvent, privilege: str) -> None:
        """REGISTER and RAISE need ownership or a grant (E_PS0D3C, psy_evperm)."""
        if not event.allows(session.user, privilege):
            op = privilege.upper()
            raise sql.ingres_error("E_PS0D3C", op, op, event.name, event.owner)

    def _create(self, session: Session, ref: sql.EventRef) -> None:
        if ref.owner is not None and ref.owner != session.user:
            raise sql.ingres_error("E_PS0421", "CREATE DBEVENT", ref.owner)
        events = session.database.events
        if (session.user, ref.name) in events:
            raise sql.ingres_error("E_QE020A", ref.name)
        events[(session.user, ref.name)] = DbEvent(session.user, ref.name)

    def _drop(self, session: Session, ref: sql.EventRef) -> None:
        if ref.owner is not None and ref.owner != session.user:
            raise sql.ingres_error("E_PS0420", "DROP DBEVENT", ref.owner)
        events = session.database.events
        if (session.user, ref.name) not in events:
            raise sql.ingres_error("E_QE020B", ref.name)
        # Registrations stay (SQL reference, Drop Dbevent); privileges go.
        del events[(session.user, ref.name)]

    def _register(self, session: Session, ref: sql.EventRef) -> None:
        event = self._resolve(session, ref, "REGISTER DBEVENT")
        self._require(session, event, "register")
        key = (event.owner, event.name)
        if key in session.registrations:
            raise sql.ingres_error("E_QE020C", event.owner, event.name)
        session.registrations.add(key)
        session.database.registered.setdefault(key, set()).add(session)

    def _remove(self, session: Session, ref: sql.EventRef) -> None:
        # No privilege is needed to remove a registration (SQL reference).
        event = self._resolve(session, ref, "REMOVE DBEVENT")
        key = (event.owner, event.name)
        if key not in session.registrations:
            raise sql.ingres_error("E_QE020D", event.owner, event.name)
        session.registrations.discard(key)
        holders = session.database.registered.get(key)
        if holders is not None:
            holders.discard(session)
            if not holders:
                del session.database.registered[key]

    def _grant(self, session: Session, stmt: sql.GrantEvent) -> None:
        """GRANT ON DBEVENT; only the owner may (no WITH GRANT OPTION here)."""
        event = self._resolve(session, stmt.ref, "GRANT")
        if event.owner != session.user:
            raise self._grant_refused(session, stmt, event)
        for grantee in stmt.grantees:
            event.grants.setdefault(grantee, set()).update(stmt.privileges)

    @staticmethod
    def _grant_refused(session: Session, stmt: sql.GrantEvent, event: DbEvent) -> IngresError:
        # psy_evperm: no privilege at all on it hides the event (E_US088F);
        # otherwise the privileges lack the grant option.
        held = any(event.allows(session.user, p) for p in ("register", "raise"))
        if not held:
            return sql.ingres_error("E_US088F", "GRANT", event.owner, event.name)
        if stmt.grant_all:
            return sql.ingres_error("E_PS0563", event.name, event.owner)
        names = ", ".join(p.upper() for p in ("register", "raise") if p in stmt.privileges)
        return sql.ingres_error("E_PS0551", names, event.name, event.owner)

    # ------------------------------------------------------------ delivery

    def _raise(
        self,
        db: Database,
        event: DbEvent,
        text: bytes | None,
        share: bool,
        raiser: Session | None,
    ) -> int:
        """Queue the event to the sessions registered now; returns how many.

        NOSHARE is written at once, ahead of the RAISE's reply. SHARE goes
        through the pending queue, the event thread: it is written after the
        reply (the pump runs once the statement's handler has written it),
        `delay` later when one is set. Its targets are taken now, at raise
        time; a session that ends meanwhile is skipped at delivery.
        """
        key = (event.owner, event.name)
        holders = db.registered.get(key, set())
        if share:
            targets = list(holders)
        else:
            targets = [raiser] if raiser is not None and raiser in holders else []
        self._raised += 1
        if not targets:
            return 0
        data = wire.event_frame(
            _first_word(event.name),
            _first_word(event.owner),
            _first_word(db.name),
            wire.encode_ingresdate(self.now()),
            _cut(text),
        )
        if not share:
            self._deliver(targets, data)
            return len(targets)
        # Dispatched events keep their order: later ones queue behind held ones.
        loop = asyncio.get_running_loop()
        self._pending.append(_Pending(loop.time() + self._delay, targets, data))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._pump_pending())
        return len(targets)

    def _deliver(self, targets: list[Session], data: bytes) -> None:
        for session in targets:
            # A peer that went away is reaped by its handler; until then
            # writing to its closing transport would only log warnings.
            if session.closed or session.writer.transport.is_closing():
                continue
            if session.buffered() > self.queue_limit:
                self._dropped += 1
                if not session.warned:
                    session.warned = True
                    log.warning(
                        "E_SC0283 session %d: event queue over %d bytes, "
                        "dbevents for it are being dropped",
                        session.id,
                        self.queue_limit,
                    )
                continue
            session.warned = False
            session.writer.write(data)
            self._delivered += 1

    async def _pump_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            head = self._pending[0]
            wait = head.due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._pending.popleft()
            self._deliver(head.targets, head.data)

    # ------------------------------------------------------------ control

    async def _control(self, payload: bytes, writer: asyncio.StreamWriter) -> None:
        p = wire.Payload(payload)
        raw = p.lstr()
        p.end()
        after: Job | None = None
        try:
            command = json.loads(raw)
            reply, after = await self._command(command)
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        writer.write(wire.control_reply_frame(json.dumps(reply)))
        await writer.drain()
        if after is not None:
            self._spawn(after)

    async def _command(self, command: dict[str, Any]) -> tuple[dict[str, Any], Job | None]:
        """Run one CONTROL command; returns the reply and work to start after it."""
        op = command["op"]
        if op == "drop_sessions":
            return {"ok": True, "dropped": self.drop_sessions()}, None
        if op == "refuse":
            self.refuse(float(command["seconds"]))
            return {"ok": True}, None
        if op == "delay":
            self.set_delay(float(command["ms"]))
            return {"ok": True}, None
        if op == "clock":
            self.set_clock_offset(float(command["offset_seconds"]))
            return {"ok": True}, None
        if op == "restart":
            down = float(command["down_seconds"])
            await self.go_down()
            log.info("fault: down for %.3fs", down)
            return {"ok": True}, self._come_back(down)
        if op == "stats":
            return {"ok": True, **self.stats()}, None
        raise ValueError(f"unknown op {op!r}")

    async def _come_back(self, down: float) -> None:
        await asyncio.sleep(down)
        if not self._stopping:
            await self._listen_logged()


def _cut(text: bytes | None) -> bytes | None:
    """Ingres cuts event text at DB_EVDATA_MAX bytes; empty text is no text."""
    if not text:
        return None
    return text[:DB_EVDATA_MAX]


def _first_word(name: str) -> str:
    """What the client receives of a name: up to its first blank (scenotify.c)."""
    return name.split(" ", 1)[0]


def _integer(value: int) -> tuple[int, bytes]:
    """(length, little-endian bytes) of the smallest Ingres integer holding `value`.

    The parser lets no literal past INTEGER8 through (a DECIMAL in Ingres).
    """
    for length, fmt in ((2, "<h"), (4, "<i")):
        if value < 1 << (8 * length - 1):
            return length, struct.pack(fmt, value)
    return 8, struct.pack("<q", value)


def _error(err: IngresError) -> bytes:
    return wire.error_frame(err.sqlstate, err.code, err.message)


class ServerThread:
    """A SimServer on its own event loop in a daemon thread (a context manager).

    The control methods are thread-safe: each runs on the server's loop and
    waits for it.
    """

    def __init__(self, server: SimServer | None = None) -> None:
        self.server = server if server is not None else SimServer()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="dbmssim", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> ServerThread:
        """Start the thread and the server; returns self."""
        self._thread.start()
        try:
            self._call(self.server.start())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and the thread."""
        if not self._thread.is_alive():
            return
        self._call(self.server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The server's bound port."""
        return self.server.port

    def target(self, user: str = "ingres", password: str = "x", database: str = "demodb") -> str:
        """The OpenAPI connection target for this server."""
        return f"@127.0.0.1,tcp_ip,{self.port}[{user},{password}]::{database}"

    @staticmethod
    async def _sync(fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def drop_sessions(self) -> int:
        """See SimServer.drop_sessions."""
        return self._call(self._sync(self.server.drop_sessions))

    def refuse(self, seconds: float) -> None:
        """See SimServer.refuse."""
        self._call(self._sync(self.server.refuse, seconds))

    def set_delay(self, ms: float) -> None:
        """See SimServer.set_delay."""
        self._call(self._sync(self.server.set_delay, ms))

    def set_clock_offset(self, seconds: float) -> None:
        """See SimServer.set_clock_offset."""
        self._call(self._sync(self.server.set_clock_offset, seconds))

    def restart(self, down_seconds: float) -> None:
        """See SimServer.restart; returns once the server listens again."""
        self._call(self.server.restart(down_seconds), timeout=down_seconds + 60.0)

    def stats(self) -> dict[str, Any]:
        """See SimServer.stats."""
        return self._call(self._sync(self.server.stats))

    def create_event(self, owner: str, name: str, database: str = "demodb") -> None:
        """See SimServer.create_event."""
        self._call(self._sync(self.server.create_event, owner, name, database))

    def grant(
        self,
        owner: str,
        name: str,
        grantee: str,
        privileges: Iterable[str],
        database: str = "demodb",
    ) -> None:
        """See SimServer.grant."""
        self._call(self._sync(self.server.grant, owner, name, grantee, list(privileges), database))

    def raise_event(
        self,
        owner: str,
        name: str,
        text: bytes | None = None,
        share: bool = True,
        database: str = "demodb",
    ) -> int:
        """See SimServer.raise_event."""
        return self._call(self._sync(self.server.raise_event, owner, name, text, share, database))
