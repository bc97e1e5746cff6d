"""OpenAPI call sequences run by Actian's REAL client library, in a child process.

`python -m tests.sim.real_client_child SCENARIO JSON_PARAMS` with II_SYSTEM
pointing at a real client installation; prints one JSON document (the
scenario's findings) on stdout. pyngres loads one library per process, so the
test process (which loaded the simulator's library) starts one of these per
scenario; `tests/sim/real_client.py` is the parent side.

Scenarios report what the library said; the tests assert on it.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import pyngres as py

from tests.sim._openapi_helpers import (
    ErrorInfo,
    Session,
    cancel_handle,
    catch,
    close_handle,
    errors,
    event_text,
    initialize,
    terminate,
    wait,
)

Json = dict[str, Any]


def _errors(infos: list[ErrorInfo]) -> list[Json]:
    return [
        {"sqlstate": e.sqlstate, "code": e.code, "message": e.message, "type": e.type}
        for e in infos
    ]


def _connect(
    env: int, target: str, user: str | None = None, password: str | None = None
) -> tuple[Session | None, Json]:
    cp = py.IIAPI_CONNPARM()
    cp.co_target = target.encode()
    if user is not None:
        cp.co_username = user.encode()
    if password is not None:
        cp.co_password = password.encode()
    cp.co_type = py.IIAPI_CT_SQL  # the real library refuses 0 (apiconn.c)
    cp.co_connHandle = env
    cp.co_timeout = 30_000
    py.IIapi_connect(cp)
    status = wait(cp.co_genParm)
    report = {"status": status, "errors": _errors(errors(cp.co_genParm.gp_errorHandle))}
    if status != py.IIAPI_ST_SUCCESS:
        return None, report
    session = Session(int(cp.co_connHandle), None)
    ac = py.IIAPI_AUTOPARM()
    ac.ac_connHandle = session.conn
    py.IIapi_autocommit(ac)
    report["autocommit"] = wait(ac.ac_genParm)
    session.tran = int(ac.ac_tranHandle)
    return session, report


def _query(session: Session, sql: str | bytes, fetch: bool) -> Json:
    """query [+ getDescriptor + getColumns] + getQueryInfo + close."""
    qp = py.IIAPI_QUERYPARM()
    qp.qy_connHandle = session.conn
    qp.qy_queryType = py.IIAPI_QT_QUERY
    qp.qy_queryText = sql if isinstance(sql, bytes) else sql.encode()
    qp.qy_tranHandle = session.tran
    py.IIapi_query(qp)
    out: Json = {"query": wait(qp.qy_genParm)}
    stmt = qp.qy_stmtHandle
    if fetch and out["query"] == py.IIAPI_ST_SUCCESS:
        out.update(_fetch(stmt))
    gq = py.IIAPI_GETQINFOPARM()
    gq.gq_stmtHandle = stmt
    py.IIapi_getQueryInfo(gq)
    out["status"] = wait(gq.gq_genParm)
    out["errors"] = _errors(errors(gq.gq_genParm.gp_errorHandle))
    out["rowcount"] = int(gq.gq_rowCount)
    out["close"] = close_handle(stmt)[0]
    return out


def _fetch(stmt: int) -> Json:
    gd = py.IIAPI_GETDESCRPARM()
    gd.gd_stmtHandle = stmt
    py.IIapi_getDescriptor(gd)
    out: Json = {"descriptor_status": wait(gd.gd_genParm), "columns": [], "rows": []}
    count = int(gd.gd_descriptorCount)
    for i in range(count):
        d = gd.gd_descriptor[i]
        out["columns"].append(
            {
                "type": int(d.ds_dataType),
                "length": int(d.ds_length),
                "nullable": bool(d.ds_nullable),
                "name": (d.ds_columnName or b"").decode(),
            }
        )
    while True:
        buffers = [ctypes.create_string_buffer(512) for _ in range(count)]
        data = (py.IIAPI_DATAVALUE * count)()
        for i, buf in enumerate(buffers):
            data[i].dv_length = len(buf)
            data[i].dv_value = ctypes.addressof(buf)
        gc = py.IIAPI_GETCOLPARM()
        gc.gc_stmtHandle = stmt
        gc.gc_rowCount = 1
        gc.gc_columnCount = count
        gc.gc_columnData = data
        py.IIapi_getColumns(gc)
        status = wait(gc.gc_genParm)
        if status != py.IIAPI_ST_SUCCESS:
            out["fetch_end"] = status
            return out
        out["rows"].append(
            [
                None if data[i].dv_null else buffers[i].raw[: data[i].dv_length].hex()
                for i in range(count)
            ]
        )


def _event(cep: Any) -> Json:
    out: Json = {
        "status": int(cep.ce_genParm.gp_status),
        "name": (cep.ce_eventName or b"").decode(),
        "owner": (cep.ce_eventOwner or b"").decode(),
        "database": (cep.ce_eventDB or b"").decode(),
        "time": ctypes.string_at(cep.ce_eventTime.dv_value, cep.ce_eventTime.dv_length).hex(),
        "info": bool(cep.ce_eventInfoAvail),
        "text": None,
    }
    if cep.ce_eventInfoAvail:
        text = event_text(cep.ce_eventHandle)[2]
        out["text"] = text.hex() if text is not None else None
    return out


def _get_event(session: Session, cep: Any, timeout_ms: int) -> Json | None:
    """getEvent until the armed catch completes or the timeout passes; the event or None."""
    if not cep.ce_genParm.gp_completed:
        session.get_event(timeout_ms)
    if not cep.ce_genParm.gp_completed:
        return None
    return _event(cep)


def _disconnect(session: Session, cep: Any | None) -> Json:
    out: Json = {}
    if cep is not None:
        if not cep.ce_genParm.gp_completed:
            out["cancel_catch"] = cancel_handle(cep.ce_eventHandle)[0]
            wait(cep.ce_genParm)
        out["close_catch"] = close_handle(cep.ce_eventHandle)[0]
    session.autocommit_off()
    out["disconnect"] = session.disconnect()
    return out


# ---------------------------------------------------------------- scenarios


def basic(target: str, event: str, text: str) -> Json:
    """Connect, select 1, create/register an event, raise it, catch it, remove, disconnect."""
    env = initialize()
    try:
        session, report = _connect(env, target)
        if session is None:
            return {"connect": report}
        out: Json = {"connect": report}
        out["select"] = _query(session, "select 1", fetch=True)
        out["username"] = _query(session, "select dbmsinfo('username')", fetch=True)
        out["create"] = _query(session, f"create dbevent {event}", fetch=False)
        out["register"] = _query(session, f"register dbevent {event}", fetch=False)
        cep = catch(session.conn)
        out["raise"] = _query(session, f"raise dbevent {event} '{text}'", fetch=False)
        out["event"] = _get_event(session, cep, 10_000)
        cep2 = catch(session.conn, cep.ce_eventHandle)
        out["raise_no_text"] = _query(session, f"raise dbevent {event}", fetch=False)
        out["event_no_text"] = _get_event(session, cep2, 10_000)
        out["remove"] = _query(session, f"remove dbevent {event}", fetch=False)
        cep3 = catch(session.conn, cep.ce_eventHandle)
        _query(session, f"raise dbevent {event} 'after remove'", fetch=False)
        out["event_after_remove"] = _get_event(session, cep3, 300)
        out.update(_disconnect(session, cep3))
        return out
    finally:
        terminate(env)


def connect_only(target: str, user: str | None = None, password: str | None = None) -> Json:
    """Connect (co_username/co_password when given) and disconnect; the connect report."""
    env = initialize()
    try:
        session, report = _connect(env, target, user, password)
        if session is not None:
            report.update(_disconnect(session, None))
        return report
    finally:
        terminate(env)


def statements(target: str, sql: list[str]) -> Json:
    """Run each statement in one session (fetching the rows of a SELECT)."""
    env = initialize()
    try:
        session, report = _connect(env, target)
        if session is None:
            return {"connect": report}
        results = [_query(session, s, fetch=s.lstrip().lower().startswith("select")) for s in sql]
        return {"connect": report, "results": results, **_disconnect(session, None)}
    finally:
        terminate(env)


def event_inside_result(target: str, sql: str) -> Json:
    """Arm a catch, fetch every row of `sql`, then see whether the catch completed.

    The event must have been taken from inside the query's result: getEvent
    is called with a zero timeout only if the catch is still pending.
    """
    env = initialize()
    try:
        session, report = _connect(env, target)
        if session is None:
            return {"connect": report}
        cep = catch(session.conn)
        out: Json = {"connect": report, "result": _query(session, sql, fetch=True)}
        out["caught_during_query"] = bool(cep.ce_genParm.gp_completed)
        out["event"] = _get_event(session, cep, 0)
        cep2 = catch(session.conn, cep.ce_eventHandle)
        out.update(_disconnect(session, cep2))
        return out
    finally:
        terminate(env)


def cancel(target: str, sql: str, rounds: int) -> Json:
    """Start `sql` and cancel it at once, `rounds` times; then run it to the end."""
    env = initialize()
    try:
        session, report = _connect(env, target)
        if session is None:
            return {"connect": report}
        outcomes = []
        for _ in range(rounds):
            qp = py.IIAPI_QUERYPARM()
            qp.qy_connHandle = session.conn
            qp.qy_queryType = py.IIAPI_QT_QUERY
            qp.qy_queryText = sql.encode()
            qp.qy_tranHandle = session.tran
            py.IIapi_query(qp)
            cancelled = cancel_handle(qp.qy_stmtHandle)[0]
            outcomes.append({"cancel": cancelled, "query": wait(qp.qy_genParm)})
            close_handle(qp.qy_stmtHandle)
        after = _query(session, sql, fetch=True)
        return {
            "connect": report,
            "outcomes": outcomes,
            "after": after,
            **_disconnect(session, None),
        }
    finally:
        terminate(env)


def idle_push(target: str, host: str, port: int) -> Json:
    """A registered session sits idle (no API call) while a second one raises.

    Once the simulator counts the event delivered, the idle session's getEvent
    with a zero timeout must find it: it was pushed while nothing read.
    """
    from bridge.sim import control  # plain sockets: no OpenAPI library involved

    env = initialize()
    try:
        idle, report = _connect(env, target)
        raiser, _ = _connect(env, target)
        if idle is None or raiser is None:
            return {"connect": report}
        out: Json = {"create": _query(idle, "create dbevent ev_idle", fetch=False)}
        out["register"] = _query(idle, "register dbevent ev_idle", fetch=False)
        cep = catch(idle.conn)
        delivered = control.stats(host, port)["events_delivered"]
        out["raise"] = _query(raiser, "raise dbevent ev_idle 'while idle'", fetch=False)
        deadline = time.monotonic() + 30
        while control.stats(host, port)["events_delivered"] <= delivered:
            if time.monotonic() > deadline:
                return {**out, "event": None, "delivered": False}
            time.sleep(0.01)
        out["delivered"] = True
        out["completed_before_get_event"] = bool(cep.ce_genParm.gp_completed)
        out["event"] = _get_event(idle, cep, 0)
        out.update(_disconnect(idle, catch(idle.conn, cep.ce_eventHandle)))
        _disconnect(raiser, None)
        return out
    finally:
        terminate(env)


def _raise_and_wait_delivered(raiser: Session, sql: str, host: str, port: int) -> bool:
    """Raise from `raiser`; True once the simulator has written the event to its target."""
    from bridge.sim import control  # plain sockets: no OpenAPI library involved

    delivered = control.stats(host, port)["events_delivered"]
    _query(raiser, sql, fetch=False)
    deadline = time.monotonic() + 30
    while control.stats(host, port)["events_delivered"] <= delivered:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def read_without_catch(target: str, host: str, port: int, event: str) -> Json:
    """An event the library reads during a query: discarded with no catch posted, else caught.

    Each event sits unread in the registered session's socket (delivered, as
    the simulator counts it) before that session runs `select 1`, which reads it.
    """
    env = initialize()
    try:
        listener, report = _connect(env, target)
        raiser, _ = _connect(env, target)
        if listener is None or raiser is None:
            return {"connect": report}
        out: Json = {"create": _query(listener, f"create dbevent {event}", fetch=False)}
        out["register"] = _query(listener, f"register dbevent {event}", fetch=False)
        out["delivered"] = _raise_and_wait_delivered(
            raiser, f"raise dbevent {event} 'unseen'", host, port)
        out["select_uncaught"] = _query(listener, "select 1", fetch=True)
        cep = catch(listener.conn)  # posted only after the query read the event
        out["after_catch"] = _get_event(listener, cep, 500)
        out["delivered_posted"] = _raise_and_wait_delivered(
            raiser, f"raise dbevent {event} 'seen'", host, port)
        out["select_caught"] = _query(listener, "select 1", fetch=True)
        out["completed_by_select"] = bool(cep.ce_genParm.gp_completed)
        out["caught"] = _event(cep) if cep.ce_genParm.gp_completed else None
        held = cep.ce_genParm.gp_completed  # re-armed, then cancelled, to close it
        out.update(_disconnect(listener, catch(listener.conn, cep.ce_eventHandle) if held else cep))
        _disconnect(raiser, None)
        return out
    finally:
        terminate(env)


def abort_pending(target: str) -> Json:
    """IIapi_abort while an IIapi_getEvent waits: when each completes, and how.

    Records, in order, every completion seen: right after IIapi_abort returns
    (before any IIapi_wait), then wait by wait until the abort has completed.
    """
    env = initialize()
    try:
        session, report = _connect(env, target)
        if session is None:
            return {"connect": report}
        gv = py.IIAPI_GETEVENTPARM()
        gv.gv_connHandle = session.conn
        gv.gv_timeout = -1
        py.IIapi_getEvent(gv)
        ab = py.IIAPI_ABORTPARM()
        ab.ab_connHandle = session.conn
        py.IIapi_abort(ab)
        out: Json = {
            "get_event_done_in_abort": bool(gv.gv_genParm.gp_completed),
            "get_event_status_in_abort": int(gv.gv_genParm.gp_status),
            "get_event_errors_in_abort": _errors(errors(gv.gv_genParm.gp_errorHandle)),
            "abort_done_in_abort": bool(ab.ab_genParm.gp_completed),
        }
        order: list[str] = []
        wt = py.IIAPI_WAITPARM()
        wt.wt_timeout = 1000
        deadline = time.monotonic() + 30
        while not ab.ab_genParm.gp_completed and time.monotonic() < deadline:
            py.IIapi_wait(wt)
            if gv.gv_genParm.gp_completed and "get_event" not in order:
                order.append("get_event")
            if ab.ab_genParm.gp_completed:
                order.append("abort")
        out["order"] = order
        out["get_event"] = {
            "status": int(gv.gv_genParm.gp_status),
            "errors": _errors(errors(gv.gv_genParm.gp_errorHandle)),
        }
        out["abort"] = int(ab.ab_genParm.gp_status)
        out["abort_errors"] = _errors(errors(ab.ab_genParm.gp_errorHandle))
        return out
    finally:
        terminate(env)


def release_open_env(target: str) -> Json:
    """IIapi_releaseEnv while a connection is open and a getEvent waits on it; then anew."""
    env = initialize()
    session, report = _connect(env, target)
    if session is None:
        terminate(env)
        return {"connect": report}
    gv = py.IIAPI_GETEVENTPARM()  # kept referenced: the library may still own it
    gv.gv_connHandle = session.conn
    gv.gv_timeout = -1
    py.IIapi_getEvent(gv)
    rp = py.IIAPI_RELENVPARM()
    rp.re_envHandle = env
    py.IIapi_releaseEnv(rp)
    out: Json = {"release": int(rp.re_status)}
    wt = py.IIAPI_WAITPARM()
    wt.wt_timeout = 0
    py.IIapi_wait(wt)
    out["get_event_called_back"] = bool(gv.gv_genParm.gp_completed)
    terminate(None)  # the environment is gone already
    again = initialize()
    try:
        session, report = _connect(again, target)
        out["connect_again"] = report["status"]
        if session is not None:
            out["select_again"] = _query(session, "select 1", fetch=True)["status"]
            out.update(_disconnect(session, None))
    finally:
        terminate(again)
    return out


SCENARIOS: dict[str, Callable[..., Json]] = {
    "release_open_env": release_open_env,
    "abort_pending": abort_pending,
    "read_without_catch": read_without_catch,
    "idle_push": idle_push,
    "event_inside_result": event_inside_result,
    "cancel": cancel,
    "basic": basic,
    "connect_only": connect_only,
    "statements": statements,
}


def main(argv: list[str]) -> int:
    """Run one scenario; print its JSON report."""
    scenario, params = argv[0], json.loads(argv[1])
    print(json.dumps(SCENARIOS[scenario](**params)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
