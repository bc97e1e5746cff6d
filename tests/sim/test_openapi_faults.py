"""Connection loss, threads, processes and pyngres.asyncio against the OpenAPI simulator."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pyngres as py
import pyngres.asyncio as pya
import pytest

from bridge.sim.server import ServerThread
from tests.sim import _openapi_helpers as h
from tests.sim import real_client_child
from tests.sim.real_client import check_abort_pending, check_release_open_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """A fresh DBMS simulator (faults affect every session) with ingres.ev1."""
    with ServerThread() as srv:
        srv.create_event("ingres", "ev1")
        yield srv


@pytest.fixture
def env() -> Iterator[int]:
    """An initialized OpenAPI environment."""
    with h.api() as handle:
        yield handle


LOSS = [(h.E_CLFE07, "08004"), (h.E_AP0001, "08006")]  # as Actian Client 1.5


def test_connection_loss_fails_get_event_and_waiting_catches(
    server: ServerThread, env: int
) -> None:
    s = h.connect(env, server.target())
    s.ok("register dbevent ev1")
    catches = [h.catch(s.conn), h.catch(s.conn, name="ev1")]
    gv = py.IIAPI_GETEVENTPARM()
    gv.gv_connHandle = s.conn
    gv.gv_timeout = -1
    py.IIapi_getEvent(gv)
    server.drop_sessions()
    assert h.wait(gv.gv_genParm) == py.IIAPI_ST_FAILURE
    got = [(e.code, e.sqlstate) for e in h.errors(gv.gv_genParm.gp_errorHandle)]
    assert got == LOSS
    for cep in catches:
        assert cep.ce_genParm.gp_completed
        assert cep.ce_genParm.gp_status == py.IIAPI_ST_FAILURE
        assert [(e.code, e.sqlstate) for e in h.errors(cep.ce_genParm.gp_errorHandle)] == LOSS
    s.abort()


def test_every_later_call_on_a_lost_connection_fails_at_once(
    server: ServerThread, env: int
) -> None:
    s = h.connect(env, server.target())
    s.ok("register dbevent ev1")
    cep = h.catch(s.conn)
    server.drop_sessions()
    assert s.get_event(-1) == py.IIAPI_ST_FAILURE
    refused_statement = 0
    for call in ("query", "getEvent", "catchEvent"):
        if call == "query":
            p = py.IIAPI_QUERYPARM()
            p.qy_connHandle, p.qy_queryText, p.qy_tranHandle = s.conn, b"select 1", s.tran
            py.IIapi_query(p)
            gp = p.qy_genParm
            # As Actian's library: the statement handle exists and must be closed.
            refused_statement = int(p.qy_stmtHandle or 0)
            assert refused_statement
        elif call == "getEvent":
            p = py.IIAPI_GETEVENTPARM()
            p.gv_connHandle, p.gv_timeout = s.conn, -1
            py.IIapi_getEvent(p)
            gp = p.gv_genParm
        else:
            p = h.catch(s.conn, cep.ce_eventHandle)
            gp = p.ce_genParm
        assert gp.gp_completed, call  # at once, no I/O
        assert gp.gp_status == py.IIAPI_ST_FAILURE, call
        assert h.codes(gp.gp_errorHandle) == [h.E_AP0001], call
    # Cleanup stays possible, as in the real OpenAPI: close, autocommit off, disconnect.
    assert h.close_handle(refused_statement) == (py.IIAPI_ST_SUCCESS, [])
    assert h.close_handle(cep.ce_eventHandle) == (py.IIAPI_ST_SUCCESS, [])
    s.autocommit_off()
    assert s.disconnect() == py.IIAPI_ST_SUCCESS


def test_connect_to_a_refusing_server_fails(server: ServerThread, env: int) -> None:
    server.refuse(30)
    cp = py.IIAPI_CONNPARM()
    cp.co_type = py.IIAPI_CT_SQL
    cp.co_target = server.target().encode()
    cp.co_connHandle = env
    py.IIapi_connect(cp)
    assert h.wait(cp.co_genParm) == py.IIAPI_ST_FAILURE
    errs = h.errors(cp.co_genParm.gp_errorHandle)
    # A closed listener is a closed port: E_CLFE05 then E_AP0001 (Actian Client 1.5).
    assert [(e.code, e.sqlstate) for e in errs] == [(0x1FE05, "08004"), (h.E_AP0001, "08006")]
    server.refuse(0)
    ab = py.IIAPI_ABORTPARM()
    ab.ab_connHandle = cp.co_connHandle
    py.IIapi_abort(ab)
    assert h.wait(ab.ab_genParm) == py.IIAPI_ST_SUCCESS


def test_threads_block_in_wait_on_their_own_connections(server: ServerThread, env: int) -> None:
    names = ("a", "b")
    caught: dict[str, bytes | None] = {}
    ready = threading.Barrier(3)

    def catcher(name: str) -> None:
        s = h.connect(env, server.target())
        s.ok("register dbevent ev1")
        cep = h.catch(s.conn, name="ev1")
        ready.wait()
        while not cep.ce_genParm.gp_completed:
            assert s.get_event(-1) == py.IIAPI_ST_SUCCESS  # blocks in IIapi_wait
        caught[name] = h.event_text(cep.ce_eventHandle)[2]
        h.close_handle(cep.ce_eventHandle)
        s.abort()

    threads = [threading.Thread(target=catcher, args=(n,)) for n in names]
    for t in threads:
        t.start()
    ready.wait()
    # Both catchers are (about to be) blocked; this thread still gets work done.
    main = h.connect(env, server.target())
    main.ok("select 1")
    main.ok("raise dbevent ev1 'hello'")
    main.abort()
    for t in threads:
        t.join(30)
    assert caught == {"a": b"hello", "b": b"hello"}


RAISER = textwrap.dedent(
    """
    import sys
    from tests.sim import _openapi_helpers as h
    with h.api() as env:
        s = h.connect(env, sys.argv[1])
        s.ok("raise dbevent ingres.ev1 'from another process'")
        s.abort()
    """
)


def test_two_processes_exchange_events(server: ServerThread, env: int) -> None:
    server.grant("ingres", "ev1", "other", ["raise"])
    s = h.connect(env, server.target())
    s.ok("register dbevent ev1")
    cep = h.catch(s.conn)
    child_env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", RAISER, server.target(user="other")],
        env=child_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    while not cep.ce_genParm.gp_completed:
        assert s.get_event(10_000) == py.IIAPI_ST_SUCCESS
    assert cep.ce_eventOwner == b"ingres"
    assert h.event_text(cep.ce_eventHandle)[2] == b"from another process"
    h.close_handle(cep.ce_eventHandle)
    s.abort()


async def test_pyngres_asyncio_catches_an_event(server: ServerThread, env: int) -> None:
    cp = pya.IIAPI_CONNPARM()
    cp.co_type = pya.IIAPI_CT_SQL
    cp.co_target = server.target().encode()
    cp.co_connHandle = env
    cp.co_timeout = -1
    await pya.IIapi_connect(cp)
    assert cp.co_genParm.gp_status == py.IIAPI_ST_SUCCESS
    ac = pya.IIAPI_AUTOPARM()
    ac.ac_connHandle = cp.co_connHandle
    await pya.IIapi_autocommit(ac)
    qp = pya.IIAPI_QUERYPARM()
    qp.qy_connHandle = cp.co_connHandle
    qp.qy_queryText = b"register dbevent ev1"
    qp.qy_tranHandle = ac.ac_tranHandle
    await pya.IIapi_query(qp)
    gq = pya.IIAPI_GETQINFOPARM()
    gq.gq_stmtHandle = qp.qy_stmtHandle
    await pya.IIapi_getQueryInfo(gq)
    assert gq.gq_genParm.gp_status == py.IIAPI_ST_SUCCESS
    cl = pya.IIAPI_CLOSEPARM()
    cl.cl_stmtHandle = qp.qy_stmtHandle
    await pya.IIapi_close(cl)
    cep = pya.IIAPI_CATCHEVENTPARM()
    cep.ce_connHandle = cp.co_connHandle
    pya.IIapi_catchEvent(cep)
    server.raise_event("ingres", "ev1", b"async")
    gv = pya.IIAPI_GETEVENTPARM()
    gv.gv_connHandle = cp.co_connHandle
    gv.gv_timeout = 5000
    await pya.IIapi_getEvent(gv)
    assert gv.gv_genParm.gp_status == py.IIAPI_ST_SUCCESS
    assert cep.ce_genParm.gp_completed
    assert cep.ce_eventName == b"ev1"
    cl.cl_stmtHandle = cep.ce_eventHandle
    await pya.IIapi_close(cl)
    assert cl.cl_genParm.gp_status == py.IIAPI_ST_SUCCESS
    ac2 = pya.IIAPI_AUTOPARM()
    ac2.ac_tranHandle = ac.ac_tranHandle
    await pya.IIapi_autocommit(ac2)
    dc = pya.IIAPI_DISCONNPARM()
    dc.dc_connHandle = cp.co_connHandle
    await pya.IIapi_disconnect(dc)
    assert dc.dc_genParm.gp_status == py.IIAPI_ST_SUCCESS


def test_abort_fails_the_waiting_get_event_at_once_and_completes_in_a_wait(
    server: ServerThread,
) -> None:
    """As the real library (tests/sim/test_gca_real_client.py runs the same scenario)."""
    check_abort_pending(real_client_child.abort_pending(server.target()))


def test_releasing_an_environment_drops_its_open_connection_with_a_warning(
    server: ServerThread,
) -> None:
    """As the real library (tests/sim/test_gca_real_client.py runs the same scenario)."""
    check_release_open_env(real_client_child.release_open_env(server.target()))
