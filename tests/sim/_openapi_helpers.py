"""Small typed helpers to drive the OpenAPI simulator through pyngres in tests.

They are deliberately thin: each test still sees the OpenAPI calls it
exercises (parameter blocks, gp_completed, IIapi_wait).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyngres as py

E_AP = 0xC90000
E_AP0001 = E_AP + 0x01
E_AP0003 = E_AP + 0x03
E_AP0004 = E_AP + 0x04
E_AP0005 = E_AP + 0x05
E_AP0006 = E_AP + 0x06
E_AP0007 = E_AP + 0x07
E_AP0008 = E_AP + 0x08
E_AP0009 = E_AP + 0x09
E_CLFE07 = 0x0001FE07  # "Read from peer process failed; it may have exited."
E_QE020C = 0x0006020C
E_PS0D3B = 0x00050D3B


@dataclass(frozen=True)
class ErrorInfo:
    """One entry of an OpenAPI error list."""

    type: int
    sqlstate: str
    code: int
    message: str
    server_info: bool


def wait(gp: Any, timeout_ms: int = -1, rounds: int = 100_000) -> int:
    """IIapi_wait until the operation completes; returns gp_status."""
    wt = py.IIAPI_WAITPARM()
    wt.wt_timeout = timeout_ms
    for _ in range(rounds):
        if gp.gp_completed:
            return int(gp.gp_status)
        py.IIapi_wait(wt)
    raise AssertionError("operation did not complete")


def errors(handle: int | None) -> list[ErrorInfo]:
    """Every entry IIapi_getErrorInfo returns for `handle`, until NO_DATA."""
    out: list[ErrorInfo] = []
    if not handle:
        return out
    gp = py.IIAPI_GETEINFOPARM()
    gp.ge_errorHandle = handle
    while True:
        py.IIapi_getErrorInfo(gp)
        if gp.ge_status != py.IIAPI_ST_SUCCESS:
            return out
        out.append(
            ErrorInfo(
                int(gp.ge_type),
                gp.ge_SQLSTATE.decode(),
                int(gp.ge_errorCode) & 0xFFFFFFFF,
                (gp.ge_message or b"").decode("utf-8", "replace"),
                bool(gp.ge_serverInfoAvail),
            )
        )


def codes(handle: int | None) -> list[int]:
    """The error codes of a handle's error list."""
    return [e.code for e in errors(handle)]


def initialize(version: int = 11) -> int:
    """IIapi_initialize(version); returns the environment handle (0 for version 1)."""
    ip = py.IIAPI_INITPARM()
    ip.in_version = version
    ip.in_timeout = -1
    py.IIapi_initialize(ip)
    assert ip.in_status == py.IIAPI_ST_SUCCESS
    return int(ip.in_envHandle or 0)


def terminate(env: int | None) -> None:
    """Release the environment and terminate the API."""
    if env:
        rp = py.IIAPI_RELENVPARM()
        rp.re_envHandle = env
        py.IIapi_releaseEnv(rp)
    tp = py.IIAPI_TERMPARM()
    py.IIapi_terminate(tp)


@dataclass
class Session:
    """One connection with its autocommit transaction."""

    conn: int
    tran: int | None

    def run(self, sql: str) -> tuple[int, list[ErrorInfo]]:
        """query + getQueryInfo + close; returns getQueryInfo's status and errors."""
        qp = py.IIAPI_QUERYPARM()
        qp.qy_connHandle = self.conn
        qp.qy_queryType = py.IIAPI_QT_QUERY
        qp.qy_queryText = sql.encode()
        qp.qy_tranHandle = self.tran
        py.IIapi_query(qp)
        assert wait(qp.qy_genParm) == py.IIAPI_ST_SUCCESS, errors(qp.qy_genParm.gp_errorHandle)
        gq = py.IIAPI_GETQINFOPARM()
        gq.gq_stmtHandle = qp.qy_stmtHandle
        py.IIapi_getQueryInfo(gq)
        status = wait(gq.gq_genParm)
        errs = errors(gq.gq_genParm.gp_errorHandle)
        cl = py.IIAPI_CLOSEPARM()
        cl.cl_stmtHandle = qp.qy_stmtHandle
        py.IIapi_close(cl)
        assert wait(cl.cl_genParm) == py.IIAPI_ST_SUCCESS
        return status, errs

    def ok(self, sql: str) -> None:
        """Run a statement that must succeed."""
        status, errs = self.run(sql)
        assert status == py.IIAPI_ST_SUCCESS, errs

    def get_event(self, timeout_ms: int) -> int:
        """IIapi_getEvent to completion; returns its status."""
        gv = py.IIAPI_GETEVENTPARM()
        gv.gv_connHandle = self.conn
        gv.gv_timeout = timeout_ms
        py.IIapi_getEvent(gv)
        return wait(gv.gv_genParm)

    def autocommit_off(self) -> None:
        """End the autocommit transaction."""
        if self.tran:
            ac = py.IIAPI_AUTOPARM()
            ac.ac_tranHandle = self.tran
            py.IIapi_autocommit(ac)
            assert wait(ac.ac_genParm) == py.IIAPI_ST_SUCCESS
            self.tran = None

    def disconnect(self) -> int:
        """IIapi_disconnect to completion; returns its status."""
        dc = py.IIAPI_DISCONNPARM()
        dc.dc_connHandle = self.conn
        py.IIapi_disconnect(dc)
        return wait(dc.dc_genParm)

    def abort(self) -> None:
        """IIapi_abort to completion."""
        ab = py.IIAPI_ABORTPARM()
        ab.ab_connHandle = self.conn
        py.IIapi_abort(ab)
        assert wait(ab.ab_genParm) == py.IIAPI_ST_SUCCESS


def connect(env: int, target: str, autocommit: bool = True) -> Session:
    """Connect (and enable autocommit); asserts success."""
    cp = py.IIAPI_CONNPARM()
    cp.co_type = py.IIAPI_CT_SQL
    cp.co_target = target.encode()
    cp.co_connHandle = env
    cp.co_timeout = -1
    py.IIapi_connect(cp)
    status = wait(cp.co_genParm)
    assert status == py.IIAPI_ST_SUCCESS, errors(cp.co_genParm.gp_errorHandle)
    session = Session(int(cp.co_connHandle), None)
    if autocommit:
        ac = py.IIAPI_AUTOPARM()
        ac.ac_connHandle = session.conn
        py.IIapi_autocommit(ac)
        assert wait(ac.ac_genParm) == py.IIAPI_ST_SUCCESS
        session.tran = int(ac.ac_tranHandle)
    return session


def catch(
    conn: int, handle: int | None = None, name: str | None = None, owner: str | None = None
) -> Any:
    """IIapi_catchEvent; returns the parameter block (not waited for)."""
    cep = py.IIAPI_CATCHEVENTPARM()
    cep.ce_connHandle = conn
    cep.ce_eventHandle = handle
    cep.ce_selectEventName = name.encode() if name is not None else None
    cep.ce_selectEventOwner = owner.encode() if owner is not None else None
    py.IIapi_catchEvent(cep)
    return cep


def close_handle(handle: int) -> tuple[int, list[int]]:
    """IIapi_close to completion; returns its status and error codes."""
    cl = py.IIAPI_CLOSEPARM()
    cl.cl_stmtHandle = handle
    py.IIapi_close(cl)
    status = wait(cl.cl_genParm)
    return status, codes(cl.cl_genParm.gp_errorHandle)


def cancel_handle(handle: int) -> tuple[int, list[int]]:
    """IIapi_cancel to completion; returns its status and error codes."""
    cn = py.IIAPI_CANCELPARM()
    cn.cn_stmtHandle = handle
    py.IIapi_cancel(cn)
    status = wait(cn.cn_genParm)
    return status, codes(cn.cn_genParm.gp_errorHandle)


def event_text(handle: int) -> tuple[int, int, bytes | None]:
    """getDescriptor + getColumns on an event handle.

    Returns (descriptor status, descriptor length, text or None on NO_DATA).
    """
    gd = py.IIAPI_GETDESCRPARM()
    gd.gd_stmtHandle = handle
    py.IIapi_getDescriptor(gd)
    dstatus = wait(gd.gd_genParm)
    length = 0
    if dstatus == py.IIAPI_ST_SUCCESS:
        assert gd.gd_descriptorCount == 1
        assert gd.gd_descriptor[0].ds_dataType == py.IIAPI_VCH_TYPE
        length = int(gd.gd_descriptor[0].ds_length)
    buf = ctypes.create_string_buffer(258)
    data = (py.IIAPI_DATAVALUE * 1)()
    data[0].dv_length = len(buf)
    data[0].dv_value = ctypes.addressof(buf)
    gc = py.IIAPI_GETCOLPARM()
    gc.gc_stmtHandle = handle
    gc.gc_rowCount = 1
    gc.gc_columnCount = 1
    gc.gc_columnData = data
    py.IIapi_getColumns(gc)
    if wait(gc.gc_genParm) == py.IIAPI_ST_NO_DATA:
        return dstatus, length, None
    (n,) = struct.unpack("=H", buf.raw[:2])
    assert data[0].dv_length == n + 2
    return dstatus, length, buf.raw[2 : 2 + n]


def set_env(env: int, param: int, value: int | str) -> int:
    """IIapi_setEnvParam with an integer or string value; returns se_status."""
    sp = py.IIAPI_SETENVPRMPARM()
    sp.se_envHandle = env
    sp.se_paramID = param
    keep: Any
    if isinstance(value, int):
        keep = ctypes.c_int(value)
        sp.se_paramValue = ctypes.cast(ctypes.pointer(keep), ctypes.c_void_p)
    else:
        keep = ctypes.c_char_p(value.encode())
        sp.se_paramValue = ctypes.cast(keep, ctypes.c_void_p)
    py.IIapi_setEnvParam(sp)
    return int(sp.se_status)


def ingresdate(raw: bytes) -> Any:
    """An IIAPI_DATAVALUE over 12 ingresdate bytes (keeps the buffer alive)."""
    buf = ctypes.create_string_buffer(raw, len(raw))
    dv = py.IIAPI_DATAVALUE()
    dv.dv_null = 0
    dv.dv_length = len(raw)
    dv.dv_value = ctypes.addressof(buf)
    dv._keep = buf  # keeps the buffer alive as long as the value
    return dv


def format_date(env: int | None, value: Any, width: int = 32) -> tuple[int, str]:
    """IIapi_formatData DTE -> CHA(width); returns (status, text)."""
    fp = py.IIAPI_FORMATPARM()
    fp.fd_envHandle = env
    fp.fd_srcDesc.ds_dataType = py.IIAPI_DTE_TYPE
    fp.fd_srcDesc.ds_length = 12
    fp.fd_srcValue = value
    out = ctypes.create_string_buffer(width)
    fp.fd_dstDesc.ds_dataType = py.IIAPI_CHA_TYPE
    fp.fd_dstDesc.ds_length = width
    fp.fd_dstValue.dv_length = width
    fp.fd_dstValue.dv_value = ctypes.addressof(out)
    py.IIapi_formatData(fp)
    return int(fp.fd_status), out.raw[: fp.fd_dstValue.dv_length].decode()


def convert_date(value: Any, width: int = 32) -> tuple[int, str]:
    """IIapi_convertData DTE -> CHA(width) with the process defaults."""
    cv = py.IIAPI_CONVERTPARM()
    cv.cv_srcDesc.ds_dataType = py.IIAPI_DTE_TYPE
    cv.cv_srcDesc.ds_length = 12
    cv.cv_srcValue = value
    out = ctypes.create_string_buffer(width)
    cv.cv_dstDesc.ds_dataType = py.IIAPI_CHA_TYPE
    cv.cv_dstDesc.ds_length = width
    cv.cv_dstValue.dv_length = width
    cv.cv_dstValue.dv_value = ctypes.addressof(out)
    py.IIapi_convertData(cv)
    return int(cv.cv_status), out.raw[: cv.cv_dstValue.dv_length].decode()


@contextmanager
def api(version: int = 11) -> Iterator[int]:
    """An initialized API with one environment, terminated afterwards."""
    env = initialize(version)
    try:
        yield env
    finally:
        terminate(env)
