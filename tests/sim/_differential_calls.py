"""Call sequences that need no live server, run in a child process against one OpenAPI library.

`python -m tests.sim._differential_calls SCENARIO [PORT]` imports pyngres (so
II_SYSTEM must name the library under test before the process starts), runs
one scenario and prints what the library answered as one JSON document on
stdout. tests/sim/test_differential.py runs each scenario once against the
simulator's library and once against a real one and compares the documents:
everything a scenario records must be the same for both.

A scenario records only what the OpenAPI specifies and what an application
can observe: statuses, whether a call completed inside the call, whether an
error handle or a connection handle was returned, and each error's ge_type,
SQLSTATE, code and message. Handles themselves are addresses and differ.
"""

from __future__ import annotations

import ctypes
import json
import struct
import sys
from collections.abc import Callable
from typing import Any

import pyngres as py

from bridge.sim import control

Record = dict[str, Any]

# An ingresdate as IIAPI_DTE_TYPE holds it (PROTOCOL.md, "The ingresdate").
_DATE = struct.Struct("<bbhhHi")
_ABSOLUTE_DATETIME = 0x3D  # absolute, year, month, day and time given
_ABSOLUTE_DATE = 0x1D  # absolute, year, month and day given: no time

DATES = {
    "leap-day-afternoon": _DATE.pack(_ABSOLUTE_DATETIME, 0, 2024, 2, 29, 49507000),
    "new-year-midnight": _DATE.pack(_ABSOLUTE_DATETIME, 0, 2026, 1, 1, 0),
    "last-second-of-year": _DATE.pack(_ABSOLUTE_DATETIME, 0, 1999, 12, 31, 86399000),
    "date-only": _DATE.pack(_ABSOLUTE_DATE, 0, 2025, 7, 4, 0),
    "empty": bytes(12),
}
DATE_FORMATS = range(14)  # IIAPI_EPV_DFRMT_US .. IIAPI_EPV_DFRMT_ISO8601
TIME_ZONES = ("GMT", "gmt", "NO-SUCH-ZONE", "")


def _wait(gp: Any) -> int:
    wt = py.IIAPI_WAITPARM()
    wt.wt_timeout = 30_000
    for _ in range(1000):
        if gp.gp_completed:
            return int(gp.gp_status)
        py.IIapi_wait(wt)
    raise RuntimeError("operation did not complete within 1000 IIapi_wait calls")


def _errors(handle: int | None) -> list[list[Any]]:
    out: list[list[Any]] = []
    if not handle:
        return out
    ge = py.IIAPI_GETEINFOPARM()
    ge.ge_errorHandle = handle
    while True:
        py.IIapi_getErrorInfo(ge)
        if ge.ge_status != py.IIAPI_ST_SUCCESS:
            out.append(["end", int(ge.ge_status)])
            return out
        out.append(
            [
                int(ge.ge_type),
                ge.ge_SQLSTATE.decode(),
                f"{int(ge.ge_errorCode) & 0xFFFFFFFF:#x}",
                (ge.ge_message or b"").decode("utf-8", "replace"),
            ]
        )


def _initialize(version: int) -> tuple[int, int | None]:
    ip = py.IIAPI_INITPARM()
    ip.in_version = version
    ip.in_timeout = -1
    ip.in_envHandle = None
    py.IIapi_initialize(ip)
    return int(ip.in_status), ip.in_envHandle


def _release(env: int | None) -> int | None:
    if not env:
        return None
    rp = py.IIAPI_RELENVPARM()
    rp.re_envHandle = env
    py.IIapi_releaseEnv(rp)
    return int(rp.re_status)


def _terminate() -> int:
    tp = py.IIAPI_TERMPARM()
    py.IIapi_terminate(tp)
    return int(tp.tm_status)


def _completion(gp: Any, at_once: bool) -> Record:
    """How an asynchronous call ended: inside the call or in IIapi_wait."""
    status = _wait(gp)
    return {
        "completed_in_call": at_once,
        "status": status,
        "errors": _errors(gp.gp_errorHandle),
    }


# ---------------------------------------------------------------- scenarios


def init_versions(_: int) -> Record:
    """IIapi_initialize/releaseEnv/terminate for every in_version around the valid range."""
    out: Record = {}
    for version in range(-1, 14):
        status, env = _initialize(version)
        row: Record = {"init": status, "env_handle": bool(env)}
        if status == py.IIAPI_ST_SUCCESS:
            row["release"] = _release(env)
            row["terminate"] = _terminate()
        out[str(version)] = row
    out["terminate_uninitialized"] = _terminate()
    return out


def init_nesting(_: int) -> Record:
    """Two initializations need two terminations; each gets its own environment."""
    first, env1 = _initialize(11)
    second, env2 = _initialize(11)
    return {
        "init": [first, second],
        "distinct_envs": bool(env1) and bool(env2) and env1 != env2,
        "release": [_release(env1), _release(env2)],
        "release_again": _release(env1),
        "terminate": [_terminate(), _terminate(), _terminate()],
    }


def not_initialized(_: int) -> Record:
    """Every call before IIapi_initialize."""
    wt = py.IIAPI_WAITPARM()
    wt.wt_timeout = 0
    py.IIapi_wait(wt)
    cp = py.IIAPI_CONNPARM()
    cp.co_target = b"@127.0.0.1,tcp_ip,1::db"
    cp.co_type = py.IIAPI_CT_SQL
    py.IIapi_connect(cp)
    at_once = bool(cp.co_genParm.gp_completed)
    fd = py.IIAPI_FORMATPARM()
    py.IIapi_formatData(fd)
    cv = py.IIAPI_CONVERTPARM()
    py.IIapi_convertData(cv)
    return {
        "wait": int(wt.wt_status),
        "connect": {
            "completed_in_call": at_once,
            "status": int(cp.co_genParm.gp_status),
            "error_handle": bool(cp.co_genParm.gp_errorHandle),
        },
        "formatData": int(fd.fd_status),
        "convertData": int(cv.cv_status),
        "terminate": _terminate(),
    }


def _set_env(env: int | None, param: int, value: Any) -> int:
    se = py.IIAPI_SETENVPRMPARM()
    se.se_envHandle = env
    se.se_paramID = param
    se.se_paramValue = value
    py.IIapi_setEnvParam(se)
    return int(se.se_status)


def _long(value: int) -> Any:
    return ctypes.cast(ctypes.pointer(ctypes.c_long(value)), ctypes.c_void_p)


def _text(value: str) -> Any:
    return ctypes.cast(ctypes.c_char_p(value.encode()), ctypes.c_void_p)


_EVENT_FUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _parm: None)


def set_env_params(_: int) -> Record:
    """IIapi_setEnvParam: the date format and time zone values, and the callbacks."""
    status, env = _initialize(11)
    out: Record = {"init": status}
    out["date_format"] = {
        str(v): _set_env(env, py.IIAPI_EP_DATE_FORMAT, _long(v)) for v in range(-1, 15)
    }
    out["timezone"] = {tz: _set_env(env, py.IIAPI_EP_TIMEZONE, _text(tz)) for tz in TIME_ZONES}
    out["event_func"] = _set_env(
        env, py.IIAPI_EP_EVENT_FUNC, ctypes.cast(_EVENT_FUNC, ctypes.c_void_p)
    )
    out["event_func_cleared"] = _set_env(env, py.IIAPI_EP_EVENT_FUNC, None)
    out["param_id_0"] = _set_env(env, 0, _long(0))
    out["param_id_30"] = _set_env(env, 30, _long(0))
    out["null_env"] = _set_env(None, py.IIAPI_EP_DATE_FORMAT, _long(0))
    out["release"] = _release(env)
    out["terminate"] = _terminate()
    return out


def _format(env: int | None, raw: bytes, dst_type: int, dst_len: int) -> Record:
    src = ctypes.create_string_buffer(raw, 12)
    dst = ctypes.create_string_buffer(dst_len)
    fd = py.IIAPI_FORMATPARM()
    fd.fd_envHandle = env
    fd.fd_srcDesc.ds_dataType = py.IIAPI_DTE_TYPE
    fd.fd_srcDesc.ds_length = 12
    fd.fd_srcValue.dv_null = False
    fd.fd_srcValue.dv_length = 12
    fd.fd_srcValue.dv_value = ctypes.addressof(src)
    fd.fd_dstDesc.ds_dataType = dst_type
    fd.fd_dstDesc.ds_length = dst_len
    fd.fd_dstValue.dv_length = dst_len
    fd.fd_dstValue.dv_value = ctypes.addressof(dst)
    py.IIapi_formatData(fd)
    return _value(int(fd.fd_status), dst_type, dst.raw, int(fd.fd_dstValue.dv_length))


def _value(status: int, dst_type: int, raw: bytes, length: int) -> Record:
    if status != py.IIAPI_ST_SUCCESS:
        return {"status": status}
    if dst_type == py.IIAPI_VCH_TYPE:
        (n,) = struct.unpack("<H", raw[:2])
        return {"status": status, "length": length, "text": raw[2 : 2 + n].decode()}
    return {"status": status, "length": length, "text": raw[:length].decode()}


def format_dates(_: int) -> Record:
    """IIapi_formatData of ingresdates in every date format, as CHA, VCH and a short CHA."""
    status, env = _initialize(11)
    out: Record = {"init": status}
    assert _set_env(env, py.IIAPI_EP_TIMEZONE, _text("GMT")) == 0
    for fmt in DATE_FORMATS:
        out[f"format {fmt}"] = _set_env(env, py.IIAPI_EP_DATE_FORMAT, _long(fmt))
        for name, raw in DATES.items():
            out[f"{fmt} {name} cha"] = _format(env, raw, py.IIAPI_CHA_TYPE, 32)
            out[f"{fmt} {name} vch"] = _format(env, raw, py.IIAPI_VCH_TYPE, 34)
            out[f"{fmt} {name} cha8"] = _format(env, raw, py.IIAPI_CHA_TYPE, 8)
    out["release"] = _release(env)
    out["terminate"] = _terminate()
    return out


def _format_odd(env: int | None, *, null: bool = False, nullable: bool = False,
                src_type: int = 3, dst_type: int = 20, dst_len: int = 32,
                src_len: int = 12) -> Record:
    src = ctypes.create_string_buffer(DATES["new-year-midnight"], 12)
    dst = ctypes.create_string_buffer(max(dst_len, 1))
    fd = py.IIAPI_FORMATPARM()
    fd.fd_envHandle = env
    fd.fd_srcDesc.ds_dataType = src_type
    fd.fd_srcDesc.ds_length = src_len
    fd.fd_srcDesc.ds_nullable = null
    fd.fd_srcValue.dv_null = null
    fd.fd_srcValue.dv_length = src_len
    fd.fd_srcValue.dv_value = ctypes.addressof(src)
    fd.fd_dstDesc.ds_dataType = dst_type
    fd.fd_dstDesc.ds_length = dst_len
    fd.fd_dstDesc.ds_nullable = nullable
    fd.fd_dstValue.dv_length = dst_len
    fd.fd_dstValue.dv_value = ctypes.addressof(dst)
    py.IIapi_formatData(fd)
    return {
        "status": int(fd.fd_status),
        "null": bool(fd.fd_dstValue.dv_null),
        "length": int(fd.fd_dstValue.dv_length) if fd.fd_status == 0 else None,
    }


def _convert_null(nullable: bool) -> Record:
    dst = ctypes.create_string_buffer(32)
    cv = py.IIAPI_CONVERTPARM()
    cv.cv_srcDesc.ds_dataType = py.IIAPI_DTE_TYPE
    cv.cv_srcDesc.ds_length = 12
    cv.cv_srcDesc.ds_nullable = True
    cv.cv_srcValue.dv_null = True
    cv.cv_dstDesc.ds_dataType = py.IIAPI_CHA_TYPE
    cv.cv_dstDesc.ds_length = 32
    cv.cv_dstDesc.ds_nullable = nullable
    cv.cv_dstValue.dv_length = 32
    cv.cv_dstValue.dv_value = ctypes.addressof(dst)
    py.IIapi_convertData(cv)
    return {"status": int(cv.cv_status), "null": bool(cv.cv_dstValue.dv_null)}


def format_odd_cases(_: int) -> Record:
    """IIapi_formatData with NULLs, other types and tiny buffers."""
    status, env = _initialize(11)
    out: Record = {"init": status}
    out["null into nullable"] = _format_odd(env, null=True, nullable=True)
    out["null into not nullable"] = _format_odd(env, null=True, nullable=False)
    out["integer destination"] = _format_odd(env, dst_type=py.IIAPI_INT_TYPE, dst_len=4)
    out["varchar of 2"] = _format_odd(env, dst_type=py.IIAPI_VCH_TYPE, dst_len=2)
    out["char of 1"] = _format_odd(env, dst_len=1)
    out["convert null into nullable"] = _convert_null(nullable=True)
    out["convert null into not nullable"] = _convert_null(nullable=False)
    out["release"] = _release(env)
    out["terminate"] = _terminate()
    return out


def convert_dates(_: int) -> Record:
    """IIapi_convertData with the process defaults (II_DATE_FORMAT from the environment)."""
    status, _env = _initialize(11)
    out: Record = {"init": status}
    for name, raw in DATES.items():
        src = ctypes.create_string_buffer(raw, 12)
        dst = ctypes.create_string_buffer(32)
        cv = py.IIAPI_CONVERTPARM()
        cv.cv_srcDesc.ds_dataType = py.IIAPI_DTE_TYPE
        cv.cv_srcDesc.ds_length = 12
        cv.cv_srcValue.dv_length = 12
        cv.cv_srcValue.dv_value = ctypes.addressof(src)
        cv.cv_dstDesc.ds_dataType = py.IIAPI_CHA_TYPE
        cv.cv_dstDesc.ds_length = 32
        cv.cv_dstValue.dv_length = 32
        cv.cv_dstValue.dv_value = ctypes.addressof(dst)
        py.IIapi_convertData(cv)
        out[name] = _value(int(cv.cv_status), py.IIAPI_CHA_TYPE, dst.raw, 32)
    out["release"] = _release(_env)
    out["terminate"] = _terminate()
    return out


def _connect(env: int | None, target: bytes | None, co_type: int) -> Record:
    cp = py.IIAPI_CONNPARM()
    cp.co_connHandle = env
    cp.co_target = target
    cp.co_timeout = 30_000
    cp.co_type = co_type
    py.IIapi_connect(cp)
    record = _completion(cp.co_genParm, bool(cp.co_genParm.gp_completed))
    record["error_handle"] = bool(cp.co_genParm.gp_errorHandle)
    record["conn_handle"] = bool(cp.co_connHandle)
    if cp.co_connHandle:
        ab = py.IIAPI_ABORTPARM()
        ab.ab_connHandle = cp.co_connHandle
        py.IIapi_abort(ab)
        record["abort"] = _wait(ab.ab_genParm)
    return record


def connect_parameters(port: int) -> Record:
    """IIapi_connect parameter validation: the connection type per API version."""
    target = f"@127.0.0.1,tcp_ip,{port}[user,secret]::db".encode()
    out: Record = {}
    for version in (1, 2, 11):
        status, env = _initialize(version)
        out[f"v{version} init"] = status
        for co_type in (0, 1, 2, 3, 4, -1):
            if co_type == py.IIAPI_CT_NS:
                continue  # a name-server connection needs a name server: not comparable
            out[f"v{version} co_type {co_type}"] = _connect(env, target, co_type)
        _release(env)
        out[f"v{version} terminate"] = _terminate()
    return out


def connect_refused(port: int) -> Record:
    """A connection to a closed loopback port: the error list the application gets."""
    status, env = _initialize(11)
    out: Record = {"init": status}
    for label, target in (
        ("login", f"@127.0.0.1,tcp_ip,{port}[user,secret]::db"),
        ("no login", f"@127.0.0.1,tcp_ip,{port}::db"),
        ("protocol omitted", f"@127.0.0.1,{port}[user,secret]::db"),
        ("database class", f"@127.0.0.1,tcp_ip,{port}[user,secret]::db/ingres"),
    ):
        out[label] = _connect(env, target.encode(), py.IIAPI_CT_SQL)
    out["release"] = _release(env)
    out["terminate"] = _terminate()
    return out


def invalid_handles(_: int) -> Record:
    """Calls given no handle, or memory that is no handle of the library's."""
    status, env = _initialize(11)
    out: Record = {"init": status}
    # Zeroed memory: a handle check reads it without crashing either library.
    bogus = ctypes.create_string_buffer(4096)
    fake = ctypes.addressof(bogus)
    for label, handle in (("null", None), ("bogus", fake)):
        out[label] = _invalid_calls(handle)
    out["getErrorInfo null"] = _errors_status(None)
    out["getErrorInfo bogus"] = _errors_status(fake)
    out["releaseEnv bogus"] = _release(fake)
    out["setEnvParam bogus"] = _set_env(fake, py.IIAPI_EP_DATE_FORMAT, _long(0))
    out["formatData bogus env"] = _format(fake, DATES["new-year-midnight"], py.IIAPI_CHA_TYPE, 32)
    out["connect bogus handle"] = _connect(fake, b"@127.0.0.1,tcp_ip,1::db", py.IIAPI_CT_SQL)
    out["release"] = _release(env)
    out["terminate"] = _terminate()
    return out


def _errors_status(handle: int | None) -> int:
    ge = py.IIAPI_GETEINFOPARM()
    ge.ge_errorHandle = handle
    py.IIapi_getErrorInfo(ge)
    return int(ge.ge_status)


def _invalid_calls(handle: int | None) -> Record:
    calls: list[tuple[str, Any, Callable[[Any], None], str]] = [
        ("query", py.IIAPI_QUERYPARM(), py.IIapi_query, "qy"),
        ("getQueryInfo", py.IIAPI_GETQINFOPARM(), py.IIapi_getQueryInfo, "gq"),
        ("getDescriptor", py.IIAPI_GETDESCRPARM(), py.IIapi_getDescriptor, "gd"),
        ("getColumns", py.IIAPI_GETCOLPARM(), py.IIapi_getColumns, "gc"),
        ("close", py.IIAPI_CLOSEPARM(), py.IIapi_close, "cl"),
        ("cancel", py.IIAPI_CANCELPARM(), py.IIapi_cancel, "cn"),
        ("getEvent", py.IIAPI_GETEVENTPARM(), py.IIapi_getEvent, "gv"),
        ("catchEvent", py.IIAPI_CATCHEVENTPARM(), py.IIapi_catchEvent, "ce"),
        ("disconnect", py.IIAPI_DISCONNPARM(), py.IIapi_disconnect, "dc"),
        ("abort", py.IIAPI_ABORTPARM(), py.IIapi_abort, "ab"),
        ("autocommit", py.IIAPI_AUTOPARM(), py.IIapi_autocommit, "ac"),
    ]
    out: Record = {}
    for name, parm, call, prefix in calls:
        for field, _type in parm._fields_:
            if field.endswith(("Handle",)) and field != f"{prefix}_genParm":
                setattr(parm, field, handle)
        if prefix == "qy":
            parm.qy_queryText = b"select 1"
        gp = getattr(parm, f"{prefix}_genParm")
        call(parm)
        out[name] = _completion(gp, bool(gp.gp_completed))
    return out


def refused_by_the_server(port: int) -> Record:
    """Connections `sim serve --users ... --database demodb` on `port` refuses.

    The real library reaches the simulator through its GCA front end, the
    simulator's library through its own protocol: both must report the
    refusal as the real library does.
    """
    status, env = _initialize(11)
    out: Record = {"init": status}
    base = f"@127.0.0.1,tcp_ip,{port}"
    for label, target in (
        ("wrong password", f"{base}[bob,nope]::demodb"),
        ("no password", f"{base}::demodb"),
        ("unknown database", f"{base}[bob,s3cret]::nosuchdb"),
    ):
        out[label] = _connect(env, target.encode(), py.IIAPI_CT_SQL)
    out["release"] = _release(env)
    out["terminate"] = _terminate()
    return out


def connection_lost(port: int) -> Record:
    """The server drops the session: what a waiting getEvent and the next query get."""


    status, env = _initialize(11)
    out: Record = {"init": status}
    cp = py.IIAPI_CONNPARM()
    cp.co_connHandle = env
    cp.co_target = f"@127.0.0.1,tcp_ip,{port}[bob,s3cret]::demodb".encode()
    cp.co_timeout = 30_000
    cp.co_type = py.IIAPI_CT_SQL
    py.IIapi_connect(cp)
    out["connect"] = _wait(cp.co_genParm)
    out["dropped"] = control.drop_sessions("127.0.0.1", port)["dropped"]
    gv = py.IIAPI_GETEVENTPARM()
    gv.gv_connHandle = cp.co_connHandle
    gv.gv_timeout = 30_000
    py.IIapi_getEvent(gv)
    out["getEvent"] = _completion(gv.gv_genParm, bool(gv.gv_genParm.gp_completed))
    qp = py.IIAPI_QUERYPARM()
    qp.qy_connHandle = cp.co_connHandle
    qp.qy_queryType = py.IIAPI_QT_QUERY
    qp.qy_queryText = b"select 1"
    py.IIapi_query(qp)
    out["query after"] = _completion(qp.qy_genParm, bool(qp.qy_genParm.gp_completed))
    out["query after: statement handle"] = bool(qp.qy_stmtHandle)
    ab = py.IIAPI_ABORTPARM()
    ab.ab_connHandle = cp.co_connHandle
    py.IIapi_abort(ab)
    out["abort"] = _wait(ab.ab_genParm)
    out["release"] = _release(env)
    out["terminate"] = _terminate()
    return out


def _start_query(conn: int, tran: int | None, sql: bytes) -> Any:
    qp = py.IIAPI_QUERYPARM()
    qp.qy_connHandle = conn
    qp.qy_queryType = py.IIAPI_QT_QUERY
    qp.qy_queryText = sql
    qp.qy_tranHandle = tran
    py.IIapi_query(qp)
    return qp


def _statement(conn: int, tran: int | None, sql: bytes, fetch: bool = False) -> Record:
    """query [+ getDescriptor + getColumns until NO_DATA] + getQueryInfo + close."""
    qp = _start_query(conn, tran, sql)
    out: Record = {"query": _completion(qp.qy_genParm, bool(qp.qy_genParm.gp_completed))}
    stmt = qp.qy_stmtHandle
    if fetch:
        gd = py.IIAPI_GETDESCRPARM()
        gd.gd_stmtHandle = stmt
        py.IIapi_getDescriptor(gd)
        out["descriptor"] = _wait(gd.gd_genParm)
        d = gd.gd_descriptor[0]
        out["column"] = [int(d.ds_dataType), int(d.ds_length), bool(d.ds_nullable)]
        rows = []
        while True:
            buf = ctypes.create_string_buffer(16)
            data = (py.IIAPI_DATAVALUE * 1)()
            data[0].dv_length = 16
            data[0].dv_value = ctypes.addressof(buf)
            gc = py.IIAPI_GETCOLPARM()
            gc.gc_stmtHandle = stmt
            gc.gc_rowCount = 1
            gc.gc_columnCount = 1
            gc.gc_columnData = data
            py.IIapi_getColumns(gc)
            status = _wait(gc.gc_genParm)
            if status != py.IIAPI_ST_SUCCESS:
                out["fetch_end"] = status
                break
            rows.append(buf.raw[: data[0].dv_length].hex())
        out["rows"] = rows
    gq = py.IIAPI_GETQINFOPARM()
    gq.gq_stmtHandle = stmt
    py.IIapi_getQueryInfo(gq)
    out["info"] = _completion(gq.gq_genParm, bool(gq.gq_genParm.gp_completed))
    out["info"]["flags"] = int(gq.gq_flags)
    out["info"]["mask"] = int(gq.gq_mask)
    out["info"]["rowcount"] = int(gq.gq_rowCount)
    cl = py.IIAPI_CLOSEPARM()
    cl.cl_stmtHandle = stmt
    py.IIapi_close(cl)
    out["close"] = _wait(cl.cl_genParm)
    return out


def _catch(conn: int, handle: int | None) -> Any:
    ce = py.IIAPI_CATCHEVENTPARM()
    ce.ce_connHandle = conn
    ce.ce_eventHandle = handle
    py.IIapi_catchEvent(ce)
    return ce


def _on_handle(call: Callable[[Any], None], parm: Any, prefix: str, handle: int) -> Record:
    setattr(parm, f"{prefix}_stmtHandle", handle)
    call(parm)
    gp = getattr(parm, f"{prefix}_genParm")
    return _completion(gp, bool(gp.gp_completed))


def _caught(ce: Any) -> Record:
    return {
        "status": int(ce.ce_genParm.gp_status),
        "errors": _errors(ce.ce_genParm.gp_errorHandle),
        "name": ce.ce_eventName and ce.ce_eventName.decode(),
        "owner": ce.ce_eventOwner and ce.ce_eventOwner.decode(),
        "database": ce.ce_eventDB and ce.ce_eventDB.decode(),
        "time_length": int(ce.ce_eventTime.dv_length) if ce.ce_genParm.gp_status == 0 else None,
        "info": bool(ce.ce_eventInfoAvail),
    }


def _event_text(handle: int) -> Record:
    gd = py.IIAPI_GETDESCRPARM()
    gd.gd_stmtHandle = handle
    py.IIapi_getDescriptor(gd)
    out: Record = {"descriptor": _completion(gd.gd_genParm, bool(gd.gd_genParm.gp_completed))}
    if gd.gd_genParm.gp_status == py.IIAPI_ST_SUCCESS:
        d = gd.gd_descriptor[0]
        out["column"] = [int(gd.gd_descriptorCount), int(d.ds_dataType), int(d.ds_length)]
    reads = []
    for _ in range(2):
        buf = ctypes.create_string_buffer(300)
        data = (py.IIAPI_DATAVALUE * 1)()
        data[0].dv_length = 300
        data[0].dv_value = ctypes.addressof(buf)
        gc = py.IIAPI_GETCOLPARM()
        gc.gc_stmtHandle = handle
        gc.gc_rowCount = 1
        gc.gc_columnCount = 1
        gc.gc_columnData = data
        py.IIapi_getColumns(gc)
        status = _wait(gc.gc_genParm)
        reads.append([status, buf.raw[: data[0].dv_length].hex() if status == 0 else None])
    out["reads"] = reads
    return out


def _get_event(conn: int, timeout_ms: int) -> Any:
    gv = py.IIAPI_GETEVENTPARM()
    gv.gv_connHandle = conn
    gv.gv_timeout = timeout_ms
    py.IIapi_getEvent(gv)
    return gv


def event_handles(port: int) -> Record:
    """Statements, the event-handle state machine and disconnect's checks, on a live session."""
    status, env = _initialize(11)
    out: Record = {"init": status}
    cp = py.IIAPI_CONNPARM()
    cp.co_connHandle = env
    cp.co_target = f"@127.0.0.1,tcp_ip,{port}[bob,s3cret]::demodb".encode()
    cp.co_timeout = 30_000
    cp.co_type = py.IIAPI_CT_SQL
    py.IIapi_connect(cp)
    out["connect"] = _wait(cp.co_genParm)
    conn = cp.co_connHandle
    ac = py.IIAPI_AUTOPARM()
    ac.ac_connHandle = conn
    py.IIapi_autocommit(ac)
    out["autocommit"] = _completion(ac.ac_genParm, bool(ac.ac_genParm.gp_completed))
    tran = ac.ac_tranHandle
    out["create"] = _statement(conn, tran, b"create dbevent ev")
    out["register"] = _statement(conn, tran, b"register dbevent ev")
    out["register again"] = _statement(conn, tran, b"register dbevent ev")
    out["select 1"] = _statement(conn, tran, b"select 1", fetch=True)
    ce = _catch(conn, None)
    out["catch"] = {"completed_in_call": bool(ce.ce_genParm.gp_completed)}
    handle = ce.ce_eventHandle
    out["catch handle"] = bool(handle)
    gv = _get_event(conn, 200)
    out["getEvent timeout"] = _completion(gv.gv_genParm, bool(gv.gv_genParm.gp_completed))
    out["raise noshare"] = _statement(conn, tran, b"raise dbevent ev 'hello' with noshare")
    out["caught"] = _caught(ce)
    out["text"] = _event_text(handle)
    out["cancel done"] = _on_handle(py.IIapi_cancel, py.IIAPI_CANCELPARM(), "cn", handle)
    ce = _catch(conn, handle)
    out["rearm"] = {"completed_in_call": bool(ce.ce_genParm.gp_completed)}
    again = _catch(conn, handle)
    out["rearm waiting"] = _completion(again.ce_genParm, bool(again.ce_genParm.gp_completed))
    out["close waiting"] = _on_handle(py.IIapi_close, py.IIAPI_CLOSEPARM(), "cl", handle)
    out["cancel waiting"] = _on_handle(py.IIapi_cancel, py.IIAPI_CANCELPARM(), "cn", handle)
    out["cancelled catch"] = _caught(again)
    out["close cancelled"] = _on_handle(py.IIapi_close, py.IIAPI_CLOSEPARM(), "cl", handle)
    gv = _get_event(conn, 2000)
    qp = _start_query(conn, tran, b"select 1")
    out["query during getEvent"] = _completion(qp.qy_genParm, bool(qp.qy_genParm.gp_completed))
    out["query during getEvent: statement handle"] = bool(qp.qy_stmtHandle)
    out["getEvent after"] = _wait(gv.gv_genParm)
    if qp.qy_stmtHandle:
        out["close refused statement"] = _on_handle(
            py.IIapi_close, py.IIAPI_CLOSEPARM(), "cl", qp.qy_stmtHandle
        )
    dc = py.IIAPI_DISCONNPARM()
    dc.dc_connHandle = conn
    py.IIapi_disconnect(dc)
    out["disconnect in a transaction"] = _completion(
        dc.dc_genParm, bool(dc.dc_genParm.gp_completed)
    )
    out["drop"] = _statement(conn, tran, b"drop dbevent ev")
    ac = py.IIAPI_AUTOPARM()
    ac.ac_tranHandle = tran
    py.IIapi_autocommit(ac)
    out["autocommit off"] = _completion(ac.ac_genParm, bool(ac.ac_genParm.gp_completed))
    py.IIapi_disconnect(dc)
    out["disconnect"] = _completion(dc.dc_genParm, bool(dc.dc_genParm.gp_completed))
    out["release"] = _release(env)
    out["terminate"] = _terminate()
    return out


# Scenarios that need a guarded `sim serve` (users bob/s3cret, database demodb).
SERVER_SCENARIOS: dict[str, Callable[[int], Record]] = {
    f.__name__: f for f in (refused_by_the_server, connection_lost, event_handles)
}

SCENARIOS: dict[str, Callable[[int], Record]] = {
    f.__name__: f
    for f in (
        init_versions,
        init_nesting,
        not_initialized,
        set_env_params,
        format_dates,
        format_odd_cases,
        convert_dates,
        connect_parameters,
        connect_refused,
        invalid_handles,
    )
}


def main(argv: list[str]) -> int:
    """Run one scenario and print its record."""
    port = int(argv[2]) if len(argv) > 2 else 1
    scenario = SCENARIOS.get(argv[1]) or SERVER_SCENARIOS[argv[1]]
    print(json.dumps(scenario(port), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
