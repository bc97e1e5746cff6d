"""DBEvents through pyngres and the OpenAPI simulator, pinned one behaviour per test.

Each behaviour follows the real OpenAPI (fosslc/Ingres src/common/aif/aip:
apisqle.c for the event-handle state machine, apiehndl.c for dispatching,
apidconn.c for disconnect's checks) and /work/shared/ingres-openapi.md.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyngres as py
import pytest

from bridge.sim.server import ServerThread
from bridge.sim.wire import decode_ingresdate
from tests.polling import wait_until
from tests.sim import _openapi_helpers as h
from tests.sim import real_client_child
from tests.sim.real_client import check_read_without_catch


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    """One DBMS simulator for the module, with dbevents ingres.ev1 and ev2."""
    with ServerThread() as srv:
        srv.create_event("ingres", "ev1")
        srv.create_event("ingres", "ev2")
        yield srv


@pytest.fixture
def env() -> Iterator[int]:
    """An initialized OpenAPI environment."""
    with h.api() as handle:
        yield handle


@pytest.fixture
def session(server: ServerThread, env: int) -> Iterator[h.Session]:
    """A connected autocommit session registered for ingres.ev1."""
    s = h.connect(env, server.target())
    s.ok("register dbevent ev1")
    yield s
    s.abort()


def _unread_from(port: int) -> int:
    """Bytes that arrived from the server at `port` and that no client has read yet.

    The receive queues of this host's TCP sockets connected to `port`
    (/proc/net/tcp: remote address, then "tx_queue:rx_queue", in hex).
    """
    unread = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with Path(table).open() as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    unread += int(fields[4].split(":")[1], 16)
    return unread


def _caught(cep: object) -> tuple[bytes, bytes, bytes, bool]:
    return (cep.ce_eventName, cep.ce_eventOwner, cep.ce_eventDB, bool(cep.ce_eventInfoAvail))  # type: ignore[attr-defined]


def test_catch_creates_the_handle_at_once_without_io(session: h.Session) -> None:
    cep = h.catch(session.conn)
    assert cep.ce_eventHandle
    assert not cep.ce_genParm.gp_completed
    wt = py.IIAPI_WAITPARM()
    wt.wt_timeout = 0
    py.IIapi_wait(wt)
    assert wt.wt_status == py.IIAPI_ST_WARNING  # nothing reads: nothing to do
    assert not cep.ce_genParm.gp_completed
    h.cancel_handle(cep.ce_eventHandle)
    assert h.close_handle(cep.ce_eventHandle) == (py.IIAPI_ST_SUCCESS, [])


def test_registration_is_required(server: ServerThread, env: int) -> None:
    s = h.connect(env, server.target())
    cep = h.catch(s.conn)
    assert server.raise_event("ingres", "ev2") == 0
    s.ok("register dbevent ev2")
    assert s.get_event(0) == py.IIAPI_ST_WARNING
    assert not cep.ce_genParm.gp_completed
    server.raise_event("ingres", "ev2")
    assert s.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert cep.ce_genParm.gp_status == py.IIAPI_ST_SUCCESS
    assert cep.ce_eventName == b"ev2"
    s.abort()


def test_registering_twice_fails_with_the_server_error(session: h.Session) -> None:
    status, errs = session.run("register dbevent ev1")
    assert status == py.IIAPI_ST_ERROR
    assert [(e.code, e.sqlstate, e.type) for e in errs] == [(h.E_QE020C, "42502", 1)]
    assert errs[0].server_info


def test_raise_noshare_reaches_only_the_raising_session(server: ServerThread, env: int) -> None:
    a = h.connect(env, server.target())
    b = h.connect(env, server.target())
    for s in (a, b):
        s.ok("register dbevent ev1")
    ca, cb = h.catch(a.conn), h.catch(b.conn)
    a.ok("raise dbevent ev1 'mine' with noshare")
    assert ca.ce_genParm.gp_completed  # read while the raise's response was read
    assert b.get_event(200) == py.IIAPI_ST_WARNING
    assert not cb.ce_genParm.gp_completed
    a.ok("raise dbevent ev1 'all' with share")
    assert b.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert cb.ce_genParm.gp_completed
    a.abort()
    b.abort()


@pytest.mark.parametrize("size", [0, 1, 255, 256, 300])
def test_event_text_round_trip(server: ServerThread, session: h.Session, size: int) -> None:
    text = bytes((i * 7 + 0x80) % 256 for i in range(size))  # not UTF-8
    cep = h.catch(session.conn)
    server.raise_event("ingres", "ev1", text)
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert cep.ce_genParm.gp_status == py.IIAPI_ST_SUCCESS
    expected = text[:256]
    assert bool(cep.ce_eventInfoAvail) == (size > 0)
    dstatus, length, got = h.event_text(cep.ce_eventHandle)
    if size == 0:
        assert (dstatus, got) == (py.IIAPI_ST_NO_DATA, None)
    else:
        assert (dstatus, length, got) == (py.IIAPI_ST_SUCCESS, 2 + len(expected), expected)
        assert h.event_text(cep.ce_eventHandle)[2] is None  # a second read: NO_DATA


def test_rearm_on_same_handle_and_events_queued_while_a_handle_holds_one(
    server: ServerThread, session: h.Session
) -> None:
    cep = h.catch(session.conn)
    handle = cep.ce_eventHandle
    for i in range(3):
        server.raise_event("ingres", "ev1", f"n{i}".encode())
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS  # read while the first is held
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    seen = [h.event_text(handle)[2]]
    for _ in range(2):
        cep = h.catch(session.conn, handle)
        assert cep.ce_eventHandle == handle
        # Already queued inside the API: the re-armed catch completes without I/O.
        assert cep.ce_genParm.gp_completed
        seen.append(h.event_text(handle)[2])
    assert seen == [b"n0", b"n1", b"n2"]
    cep = h.catch(session.conn, handle)
    assert not cep.ce_genParm.gp_completed
    h.cancel_handle(handle)
    h.close_handle(handle)


def test_rearming_a_waiting_handle_fails_invalid_sequence(
    server: ServerThread, session: h.Session
) -> None:
    first = h.catch(session.conn)
    again = h.catch(session.conn, first.ce_eventHandle)
    assert again.ce_genParm.gp_completed
    assert again.ce_genParm.gp_status == py.IIAPI_ST_FAILURE
    errs = h.errors(again.ce_genParm.gp_errorHandle)
    assert [(e.code, e.sqlstate) for e in errs] == [(h.E_AP0006, "5000R")]
    # As the real state machine: the new block replaced the waiting one, so
    # the first catch never completes even when an event arrives.
    server.raise_event("ingres", "ev1")
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert not first.ce_genParm.gp_completed
    h.close_handle(first.ce_eventHandle)


def test_get_event_timeout_completes_with_warning(session: h.Session) -> None:
    cep = h.catch(session.conn)
    started = time.monotonic()
    assert session.get_event(100) == py.IIAPI_ST_WARNING
    assert time.monotonic() - started >= 0.09
    assert session.get_event(0) == py.IIAPI_ST_WARNING
    assert not cep.ce_genParm.gp_completed
    h.cancel_handle(cep.ce_eventHandle)
    h.close_handle(cep.ce_eventHandle)


def test_idle_session_receives_only_while_something_reads(
    server: ServerThread, session: h.Session
) -> None:
    cep = h.catch(session.conn)
    server.raise_event("ingres", "ev1", b"x")
    # The event's bytes wait in the client's socket: only a read can deliver them.
    assert wait_until(lambda: _unread_from(server.port) > 0, 10)
    wt = py.IIAPI_WAITPARM()
    wt.wt_timeout = 100
    py.IIapi_wait(wt)
    assert wt.wt_status == py.IIAPI_ST_WARNING
    assert not cep.ce_genParm.gp_completed  # idle: nothing read it
    session.ok("select 1")  # a query reads the connection: the event arrives
    assert cep.ce_genParm.gp_completed
    assert _caught(cep) == (b"ev1", b"ingres", b"demodb", True)
    h.close_handle(cep.ce_eventHandle)


def test_get_event_outstanding_blocks_queries_and_a_second_get_event(
    session: h.Session,
) -> None:
    gv = py.IIAPI_GETEVENTPARM()
    gv.gv_connHandle = session.conn
    gv.gv_timeout = 300
    py.IIapi_getEvent(gv)
    assert not gv.gv_genParm.gp_completed
    qp = py.IIAPI_QUERYPARM()
    qp.qy_connHandle = session.conn
    qp.qy_queryText = b"select 1"
    qp.qy_tranHandle = session.tran
    py.IIapi_query(qp)
    assert h.wait(qp.qy_genParm) == py.IIAPI_ST_FAILURE
    assert h.codes(qp.qy_genParm.gp_errorHandle) == [h.E_AP0006]
    # Refused by the state machine, after the statement handle was made (apiquery.c).
    assert h.close_handle(qp.qy_stmtHandle) == (py.IIAPI_ST_SUCCESS, [])
    assert session.get_event(0) == py.IIAPI_ST_FAILURE
    assert h.wait(gv.gv_genParm) == py.IIAPI_ST_WARNING


def test_cancel_and_close_of_event_handles(server: ServerThread, session: h.Session) -> None:
    cep = h.catch(session.conn)
    handle = cep.ce_eventHandle
    assert h.close_handle(handle) == (py.IIAPI_ST_FAILURE, [h.E_AP0007])
    assert h.cancel_handle(handle) == (py.IIAPI_ST_SUCCESS, [])
    assert cep.ce_genParm.gp_status == py.IIAPI_ST_FAILURE
    assert [(e.code, e.sqlstate) for e in h.errors(cep.ce_genParm.gp_errorHandle)] == [
        (h.E_AP0009, "5000R")
    ]
    assert h.cancel_handle(handle) == (py.IIAPI_ST_WARNING, [])  # already cancelled
    cep = h.catch(session.conn, handle)  # a cancelled handle may be re-armed
    server.raise_event("ingres", "ev1")
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert cep.ce_genParm.gp_status == py.IIAPI_ST_SUCCESS
    assert h.cancel_handle(handle) == (py.IIAPI_ST_FAILURE, [h.E_AP0008])  # already caught
    assert h.close_handle(handle) == (py.IIAPI_ST_SUCCESS, [])
    assert h.close_handle(handle)[0] == py.IIAPI_ST_INVALID_HANDLE


def test_event_name_and_owner_filters_are_exact(server: ServerThread, session: h.Session) -> None:
    session.ok("register dbevent ev2")
    only_ev2 = h.catch(session.conn, name="ev2")
    upper = h.catch(session.conn, name="EV1")
    by_owner = h.catch(session.conn, owner="ingres")
    server.raise_event("ingres", "ev1")
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert by_owner.ce_genParm.gp_completed
    assert not only_ev2.ce_genParm.gp_completed
    assert not upper.ce_genParm.gp_completed
    h.close_handle(by_owner.ce_eventHandle)
    server.raise_event("ingres", "ev2")
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert only_ev2.ce_eventName == b"ev2"
    for cep in (only_ev2, upper):
        h.cancel_handle(cep.ce_eventHandle)
        h.close_handle(cep.ce_eventHandle)


def test_event_matching_no_handle_is_discarded(server: ServerThread, session: h.Session) -> None:
    server.raise_event("ingres", "ev1", b"lost")
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS  # read, matched nothing
    cep = h.catch(session.conn)
    assert not cep.ce_genParm.gp_completed
    server.raise_event("ingres", "ev1", b"kept")
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert h.event_text(cep.ce_eventHandle)[2] == b"kept"
    h.close_handle(cep.ce_eventHandle)


def test_disconnect_refused_while_a_transaction_or_event_handle_is_open(
    server: ServerThread, env: int
) -> None:
    s = h.connect(env, server.target())
    cep = h.catch(s.conn)
    dc = py.IIAPI_DISCONNPARM()
    dc.dc_connHandle = s.conn
    py.IIapi_disconnect(dc)
    assert dc.dc_genParm.gp_completed  # a local check: completes inside the call
    assert dc.dc_genParm.gp_status == py.IIAPI_ST_FAILURE
    assert [(e.code, e.sqlstate) for e in h.errors(dc.dc_genParm.gp_errorHandle)] == [
        (h.E_AP0003, "25000")
    ]
    s.autocommit_off()
    assert s.disconnect() == py.IIAPI_ST_FAILURE
    h.cancel_handle(cep.ce_eventHandle)
    py.IIapi_disconnect(dc)
    assert h.codes(dc.dc_genParm.gp_errorHandle) == [h.E_AP0005]
    h.close_handle(cep.ce_eventHandle)
    assert s.disconnect() == py.IIAPI_ST_SUCCESS


def test_event_time_formats_to_the_raise_time(
    server: ServerThread, session: h.Session, env: int
) -> None:
    assert h.set_env(env, py.IIAPI_EP_TIMEZONE, "GMT") == py.IIAPI_ST_SUCCESS
    assert h.set_env(env, py.IIAPI_EP_DATE_FORMAT, py.IIAPI_EPV_DFRMT_ISO4) == 0
    cep = h.catch(session.conn)
    before = int(time.time())
    server.raise_event("ingres", "ev1")
    after = int(time.time())
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert cep.ce_eventTime.dv_length == 12
    assert not cep.ce_eventTime.dv_null
    status, text = h.format_date(env, cep.ce_eventTime)
    assert status == py.IIAPI_ST_SUCCESS
    # ISO4 is "yyyymmdd hh:mm:ss" in Ingres (adudates.c), blank padded.
    stamp = datetime.strptime(text.strip(), "%Y%m%d %H:%M:%S").replace(tzinfo=UTC)
    assert before <= stamp.timestamp() <= after
    raw = ctypes.string_at(cep.ce_eventTime.dv_value, 12)
    assert len(raw) == 12
    h.close_handle(cep.ce_eventHandle)


# iiapi.h: II_VOID (*IIAPI_CALLBACK)(II_PTR closure, II_PTR parmBlock). (pyngres'
# own IIapi_callback declares the parameter block by value, which does not
# match the C signature, so the test declares the real one.)
CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


def test_callbacks_are_called_with_closure_and_parm_block(
    server: ServerThread, session: h.Session
) -> None:
    calls: list[tuple[str, int | None, int]] = []

    def on_done(closure: int | None, parm: int | None) -> None:
        assert closure is not None
        assert parm is not None
        name = ctypes.cast(closure, ctypes.POINTER(ctypes.py_object)).contents.value
        completed = ctypes.cast(parm, ctypes.POINTER(py.IIAPI_GENPARM)).contents.gp_completed
        calls.append((name, parm, completed))

    callback = CALLBACK(on_done)
    closure = py.IIapi_getClosurePtr("catch")
    cep = py.IIAPI_CATCHEVENTPARM()
    cep.ce_connHandle = session.conn
    cep.ce_genParm.gp_callback = ctypes.cast(callback, ctypes.c_void_p)
    cep.ce_genParm.gp_closure = closure
    py.IIapi_catchEvent(cep)
    assert calls == []
    server.raise_event("ingres", "ev1")
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert calls == [("catch", ctypes.addressof(cep), 1)]
    h.close_handle(cep.ce_eventHandle)


_EVENT_FUNC = ctypes.CFUNCTYPE(None, ctypes.POINTER(py.IIAPI_EVENTPARM))


def _set_event_func(env: int, func: Any) -> int:
    sp = py.IIAPI_SETENVPRMPARM()
    sp.se_envHandle = env
    sp.se_paramID = py.IIAPI_EP_EVENT_FUNC
    sp.se_paramValue = ctypes.cast(func, ctypes.c_void_p) if func is not None else None
    py.IIapi_setEnvParam(sp)
    return int(sp.se_status)


def test_event_func_gets_the_events_no_handle_catches(
    server: ServerThread, session: h.Session, env: int
) -> None:
    """IIAPI_EP_EVENT_FUNC (apievent.c, dispatch_dbev): called for an uncaught event only."""
    seen: list[tuple[int | None, int | None, bytes | None, bytes | None, bytes | None, bytes]] = []

    def on_event(parm: Any) -> None:
        p = parm.contents
        raw = ctypes.string_at(p.ev_eventTime.dv_value, p.ev_eventTime.dv_length)
        seen.append(
            (p.ev_envHandle, p.ev_connHandle, p.ev_eventName, p.ev_eventOwner, p.ev_eventDB, raw)
        )

    callback = _EVENT_FUNC(on_event)
    assert _set_event_func(env, callback) == py.IIAPI_ST_SUCCESS
    server.raise_event("ingres", "ev1", b"nobody catches this")
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert len(seen) == 1
    env_handle, conn, name, owner, db, raw = seen[0]
    assert (env_handle, conn) == (env, session.conn)
    assert (name, owner, db) == (b"ev1", b"ingres", b"demodb")
    assert abs(decode_ingresdate(raw).timestamp() - time.time()) < 60
    cep = h.catch(session.conn)
    server.raise_event("ingres", "ev1", b"caught")
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert cep.ce_genParm.gp_status == py.IIAPI_ST_SUCCESS
    assert len(seen) == 1  # a caught event is not the callback's
    h.close_handle(cep.ce_eventHandle)
    assert _set_event_func(env, None) == py.IIAPI_ST_SUCCESS  # NULL: off
    server.raise_event("ingres", "ev1", b"nobody again")
    assert session.get_event(5000) == py.IIAPI_ST_SUCCESS
    assert len(seen) == 1


@pytest.mark.parametrize("version", [9, 10])
def test_row_count_ex_is_written_from_version_10_only(server: ServerThread, version: int) -> None:
    """gq_rowCountEx is a "Version 10 parameter" (iiapi.h): older blocks are shorter."""
    with h.api(version) as env:
        s = h.connect(env, server.target())
        qp = py.IIAPI_QUERYPARM()
        qp.qy_connHandle = s.conn
        qp.qy_queryType = py.IIAPI_QT_QUERY
        qp.qy_queryText = b"select 1"
        qp.qy_tranHandle = s.tran
        py.IIapi_query(qp)
        assert h.wait(qp.qy_genParm) == py.IIAPI_ST_SUCCESS
        gq = py.IIAPI_GETQINFOPARM()
        gq.gq_stmtHandle = qp.qy_stmtHandle
        gq.gq_rowCountEx = 0x5EED
        py.IIapi_getQueryInfo(gq)
        assert h.wait(gq.gq_genParm) == py.IIAPI_ST_SUCCESS
        assert gq.gq_mask == py.IIAPI_GQ_ROW_COUNT  # as the real library (test_differential)
        assert gq.gq_rowCountEx == (1 if version >= 10 else 0x5EED)
        cl = py.IIAPI_CLOSEPARM()
        cl.cl_stmtHandle = qp.qy_stmtHandle
        py.IIapi_close(cl)
        assert h.wait(cl.cl_genParm) == py.IIAPI_ST_SUCCESS
        s.abort()


def test_an_event_read_during_a_query_with_no_catch_posted_is_discarded(
    server: ServerThread,
) -> None:
    """As the real library (tests/sim/test_gca_real_client.py runs the same scenario
    through it): the event is read by the query and matches no posted catch."""
    report = real_client_child.read_without_catch(
        server.target(), "127.0.0.1", server.port, "ev_nocatch"
    )
    check_read_without_catch(report)
