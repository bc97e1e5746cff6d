"""The OpenAPI simulator's surface: initialization, targets, handles, dates, queries."""

from __future__ import annotations

import ctypes
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyngres as py
import pytest

from bridge.sim.server import ServerThread, SimServer
from tests.sim import _openapi_helpers as h

_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    """A DBMS simulator that knows demodb only and user ingres/secret."""
    with ServerThread(SimServer(databases=["demodb"], users={"ingres": "secret"})) as srv:
        yield srv


@pytest.fixture
def env() -> Iterator[int]:
    """An initialized OpenAPI environment."""
    with h.api() as handle:
        yield handle


def _connect(env: int, target: str) -> tuple[int, list[h.ErrorInfo], int]:
    cp = py.IIAPI_CONNPARM()
    cp.co_type = py.IIAPI_CT_SQL
    cp.co_target = target.encode()
    cp.co_connHandle = env
    py.IIapi_connect(cp)
    assert not cp.co_genParm.gp_completed  # asynchronous: completes in IIapi_wait
    status = h.wait(cp.co_genParm)
    errs = h.errors(cp.co_genParm.gp_errorHandle)
    conn = int(cp.co_connHandle)
    return status, errs, conn


def _abort(conn: int) -> None:
    ab = py.IIAPI_ABORTPARM()
    ab.ab_connHandle = conn
    py.IIapi_abort(ab)
    assert h.wait(ab.ab_genParm) == py.IIAPI_ST_SUCCESS


def _in_a_fresh_process(check: str) -> None:
    """Run `check` (a function of this module) in a new process.

    For checks of the library's process-wide initialization: an earlier test in
    this process may have left it initialized for good (a connection whose abort
    never completed keeps its environment, bridge/openapi.py `_abandon_environment`).
    """
    code = f"from tests.sim.test_openapi_api import {check}; {check}()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=_ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_every_function_before_initialize_reports_not_initialized() -> None:
    _in_a_fresh_process("_before_initialize")


def _before_initialize() -> None:
    wt = py.IIAPI_WAITPARM()
    py.IIapi_wait(wt)
    assert wt.wt_status == py.IIAPI_ST_NOT_INITIALIZED
    qp = py.IIAPI_QUERYPARM()
    py.IIapi_query(qp)
    assert (qp.qy_genParm.gp_completed, qp.qy_genParm.gp_status) == (
        1,
        py.IIAPI_ST_NOT_INITIALIZED,
    )
    tp = py.IIAPI_TERMPARM()
    py.IIapi_terminate(tp)
    assert tp.tm_status == py.IIAPI_ST_NOT_INITIALIZED


def test_garbage_handles_are_invalid_not_crashes(env: int) -> None:
    garbage = ctypes.addressof(ctypes.create_string_buffer(64))
    for fn, parm, field in [
        (py.IIapi_query, py.IIAPI_QUERYPARM(), "qy_connHandle"),
        (py.IIapi_getEvent, py.IIAPI_GETEVENTPARM(), "gv_connHandle"),
        (py.IIapi_catchEvent, py.IIAPI_CATCHEVENTPARM(), "ce_connHandle"),
        (py.IIapi_close, py.IIAPI_CLOSEPARM(), "cl_stmtHandle"),
        (py.IIapi_cancel, py.IIAPI_CANCELPARM(), "cn_stmtHandle"),
        (py.IIapi_disconnect, py.IIAPI_DISCONNPARM(), "dc_connHandle"),
        (py.IIapi_abort, py.IIAPI_ABORTPARM(), "ab_connHandle"),
        (py.IIapi_getColumns, py.IIAPI_GETCOLPARM(), "gc_stmtHandle"),
    ]:
        for value in (None, garbage, env):
            setattr(parm, field, value)
            fn(parm)
            gp = parm.genParm()
            assert (gp.gp_completed, gp.gp_status) == (1, py.IIAPI_ST_INVALID_HANDLE), fn
    ge = py.IIAPI_GETEINFOPARM()
    ge.ge_errorHandle = garbage
    py.IIapi_getErrorInfo(ge)
    assert ge.ge_status == py.IIAPI_ST_INVALID_HANDLE
    py.IIapi_wait(None)  # a NULL parameter block is ignored, as the real API


def test_wait_with_nothing_pending_returns_warning_at_once(env: int) -> None:
    wt = py.IIAPI_WAITPARM()
    wt.wt_timeout = -1
    py.IIapi_wait(wt)
    assert wt.wt_status == py.IIAPI_ST_WARNING


def test_connect_with_login_in_the_target(server: ServerThread, env: int) -> None:
    status, errs, conn = _connect(env, server.target("ingres", "secret"))
    assert (status, errs) == (py.IIAPI_ST_SUCCESS, [])
    dc = py.IIAPI_DISCONNPARM()
    dc.dc_connHandle = conn
    py.IIapi_disconnect(dc)
    assert h.wait(dc.dc_genParm) == py.IIAPI_ST_SUCCESS


def test_co_username_and_password_override_the_target(server: ServerThread, env: int) -> None:
    cp = py.IIAPI_CONNPARM()
    cp.co_type = py.IIAPI_CT_SQL
    cp.co_target = f"@127.0.0.1,tcp_ip,{server.port}::demodb".encode()
    cp.co_username = b"ingres"
    cp.co_password = b"secret"
    cp.co_connHandle = env
    py.IIapi_connect(cp)
    assert h.wait(cp.co_genParm) == py.IIAPI_ST_SUCCESS
    assert cp.co_apiLevel >= py.IIAPI_LEVEL_1
    assert cp.co_sizeAdvise > 0
    _abort(cp.co_connHandle)


def test_short_dynamic_vnode_form(server: ServerThread, env: int) -> None:
    status, _, conn = _connect(env, f"@127.0.0.1,{server.port}[ingres,secret]::demodb")
    assert status == py.IIAPI_ST_SUCCESS
    _abort(conn)


def test_server_errors_of_a_failed_connect(server: ServerThread, env: int) -> None:
    """The lists Actian's library gives (tests/sim/test_gca_real_client.py)."""
    status, errs, conn = _connect(env, server.target("ingres", "wrong"))
    assert status == py.IIAPI_ST_FAILURE
    assert [(e.type, e.sqlstate, e.code) for e in errs] == [
        (py.IIAPI_GE_ERROR, "08004", 0x000C000B),  # E_GC000B
        (py.IIAPI_GE_ERROR, "08006", h.E_AP0001),
    ]
    assert errs[0].message == "Login failure: invalid username/password."
    _abort(conn)
    status, errs, conn = _connect(env, server.target("ingres", "secret", "nosuchdb"))
    assert status == py.IIAPI_ST_ERROR
    assert [(e.type, e.sqlstate, e.code) for e in errs] == [
        (py.IIAPI_GE_ERROR, "08004", 0x00000010),  # E_US0010
        (py.IIAPI_GE_WARNING, "08004", h.E_AP + 0x0E),  # E_AP000E
    ]
    assert errs[0].message == "Database does not exist: 'nosuchdb'."
    _abort(conn)


NAME_SERVER = 0x000C0025  # E_GC0025: the name server is needed and not running
CONNECT_ERROR = 0x0001FE05  # E_CLFE05: "Unable to make outgoing connection."


@pytest.mark.parametrize(
    ("target", "first"),
    [
        # Each as Actian Client 1.5 answers it (tests/sim/test_differential.py).
        ("demodb", NAME_SERVER),  # a local database
        ("somenode::demodb", NAME_SERVER),  # a vnode: only the name server knows it
        ("@127.0.0.1,decnet,II::demodb", NAME_SERVER),  # no such protocol driver
        ("@127.0.0.1::demodb", NAME_SERVER),  # no port
        ("@127.0.0.1,tcp_ip,II16::demodb", 0x0001FE10),  # E_CLFE10: subport over 15
        ("@127.0.0.1,tcp_ip,abc::demodb", 0x0001FE0C),  # E_CLFE0C: no port
        ("@127.0.0.1,tcp_ip,0::demodb", 0x0001FE0C),
        ("@,tcp_ip,5::demodb", 0x000C012A),  # E_GC012A: no host
        ("@127.0.0.1,tcp_ip,5[u,p::demodb", 0x000C012E),  # E_GC012E: login not closed
        ("@no-such-host.invalid,tcp_ip,II::demodb", 0x0001FE0B),  # E_CLFE0B: unknown host
    ],
)
def test_targets_refused_inside_the_call(env: int, target: str, first: int) -> None:
    cp = py.IIAPI_CONNPARM()
    cp.co_type = py.IIAPI_CT_SQL
    cp.co_target = target.encode()
    cp.co_connHandle = env
    py.IIapi_connect(cp)
    assert cp.co_genParm.gp_completed  # known before any I/O
    assert cp.co_genParm.gp_status == py.IIAPI_ST_FAILURE
    errs = h.errors(cp.co_genParm.gp_errorHandle)
    assert [(e.type, e.code, e.sqlstate) for e in errs] == [
        (py.IIAPI_GE_ERROR, first, "08004"),
        (py.IIAPI_GE_ERROR, h.E_AP0001, "08006"),
    ]
    assert errs[1].message == "The connection to the server has been aborted."
    _abort(cp.co_connHandle)


def test_closed_port_fails_in_wait_as_the_real_library(env: int) -> None:
    """The list Actian's library gives for a port nobody listens on."""
    with ServerThread() as gone:
        port = gone.port
    cp = py.IIAPI_CONNPARM()
    cp.co_type = py.IIAPI_CT_SQL
    cp.co_target = f"@127.0.0.1,tcp_ip,{port}[user,secret]::demodb".encode()
    cp.co_connHandle = env
    py.IIapi_connect(cp)
    assert not cp.co_genParm.gp_completed
    assert h.wait(cp.co_genParm) == py.IIAPI_ST_FAILURE
    errs = h.errors(cp.co_genParm.gp_errorHandle)
    assert [(e.type, e.sqlstate, e.code, e.message, e.server_info) for e in errs] == [
        (py.IIAPI_GE_ERROR, "08004", CONNECT_ERROR, "Unable to make outgoing connection.", False),
        (py.IIAPI_GE_ERROR, "08006", h.E_AP0001, "The connection to the server has been aborted.",
         False),
    ]
    _abort(cp.co_connHandle)


@pytest.mark.parametrize("co_type", [0, 2, 4, -1])
def test_connection_type_is_required_from_version_2(
    server: ServerThread, env: int, co_type: int
) -> None:
    """apiconn.c: FAILURE inside the call, no error handle, no connection handle."""
    cp = py.IIAPI_CONNPARM()
    cp.co_type = co_type
    cp.co_target = server.target("ingres", "secret").encode()
    cp.co_connHandle = env
    py.IIapi_connect(cp)
    assert cp.co_genParm.gp_completed
    assert cp.co_genParm.gp_status == py.IIAPI_ST_FAILURE
    assert cp.co_genParm.gp_errorHandle is None
    assert cp.co_connHandle is None


def test_version_1_has_no_connection_type(server: ServerThread) -> None:
    """co_type is a version 2 parameter: a version 1 application never sets it."""
    with h.api(version=1) as env:
        assert env == 0  # version 1: no environment handle
        cp = py.IIAPI_CONNPARM()
        cp.co_type = 0
        cp.co_target = server.target("ingres", "secret").encode()
        py.IIapi_connect(cp)
        assert h.wait(cp.co_genParm) == py.IIAPI_ST_SUCCESS
        _abort(cp.co_connHandle)


def test_name_server_connections_need_a_name_server(server: ServerThread, env: int) -> None:
    cp = py.IIAPI_CONNPARM()
    cp.co_type = py.IIAPI_CT_NS
    cp.co_target = server.target("ingres", "secret").encode()
    cp.co_connHandle = env
    py.IIapi_connect(cp)
    assert cp.co_genParm.gp_completed
    assert h.codes(cp.co_genParm.gp_errorHandle) == [NAME_SERVER, h.E_AP0001]
    _abort(cp.co_connHandle)


def test_an_invalid_handle_leaves_no_connection_handle(env: int) -> None:
    bogus = ctypes.create_string_buffer(256)
    cp = py.IIAPI_CONNPARM()
    cp.co_type = py.IIAPI_CT_SQL
    cp.co_target = b"@127.0.0.1,tcp_ip,1::demodb"
    cp.co_connHandle = ctypes.addressof(bogus)
    py.IIapi_connect(cp)
    assert (cp.co_genParm.gp_completed, cp.co_genParm.gp_status) == (
        1,
        py.IIAPI_ST_INVALID_HANDLE,
    )
    assert cp.co_connHandle is None


def test_error_info_of_no_handle_is_no_data(env: int) -> None:
    ge = py.IIAPI_GETEINFOPARM()
    ge.ge_errorHandle = None
    py.IIapi_getErrorInfo(ge)
    assert ge.ge_status == py.IIAPI_ST_NO_DATA


def test_nested_initialization_terminates_with_a_warning_first() -> None:
    _in_a_fresh_process("_nested_initialization")


def _nested_initialization() -> None:
    first, second = py.IIAPI_INITPARM(), py.IIAPI_INITPARM()
    for ip in (first, second):
        ip.in_version = 11
        py.IIapi_initialize(ip)
        assert ip.in_status == py.IIAPI_ST_SUCCESS
    for ip in (first, second):
        rp = py.IIAPI_RELENVPARM()
        rp.re_envHandle = ip.in_envHandle
        py.IIapi_releaseEnv(rp)
    statuses = []
    for _ in range(3):
        tp = py.IIAPI_TERMPARM()
        py.IIapi_terminate(tp)
        statuses.append(tp.tm_status)
    assert statuses == [
        py.IIAPI_ST_WARNING,  # another initialization keeps the API alive
        py.IIAPI_ST_SUCCESS,
        py.IIAPI_ST_NOT_INITIALIZED,
    ]


@pytest.mark.parametrize("highest", [8, 10])
def test_acts_as_an_older_runtime_when_told(monkeypatch: pytest.MonkeyPatch, highest: int) -> None:
    """BRIDGE_SIM_MAX_API_VERSION: refuse in_version above it, as Ingres 10 refuses 9+."""
    monkeypatch.setenv("BRIDGE_SIM_MAX_API_VERSION", str(highest))
    for version, expected in ((highest + 1, py.IIAPI_ST_FAILURE), (highest, py.IIAPI_ST_SUCCESS)):
        ip = py.IIAPI_INITPARM()
        ip.in_version = version
        py.IIapi_initialize(ip)
        assert ip.in_status == expected
    h.terminate(ip.in_envHandle)


def test_unsupported_functions_fail_with_a_clear_error(env: int) -> None:
    cm = py.IIAPI_COMMITPARM()
    py.IIapi_commit(cm)
    assert (cm.cm_genParm.gp_completed, cm.cm_genParm.gp_status) == (1, py.IIAPI_ST_FAILURE)
    (err,) = h.errors(cm.cm_genParm.gp_errorHandle)
    assert "IIapi_commit is not supported by the OpenAPI simulator" in err.message
    gi = py.IIAPI_GETCOLINFOPARM()
    py.IIapi_getColumnInfo(gi)
    assert gi.gi_status == py.IIAPI_ST_FAILURE


def test_set_env_param_accepts_and_refuses_as_documented(env: int) -> None:
    assert h.set_env(env, py.IIAPI_EP_TIMEZONE, "GMT") == py.IIAPI_ST_SUCCESS
    assert h.set_env(env, py.IIAPI_EP_TIMEZONE, "NOT-A-ZONE") == py.IIAPI_ST_FAILURE
    assert h.set_env(env, py.IIAPI_EP_DATE_FORMAT, py.IIAPI_EPV_DFRMT_ISO4) == 0
    assert h.set_env(env, py.IIAPI_EP_DATE_FORMAT, 99) == py.IIAPI_ST_FAILURE
    assert h.set_env(env, py.IIAPI_EP_CHAR_WIDTH, 10) == py.IIAPI_ST_SUCCESS
    assert h.set_env(env, 0, 1) == py.IIAPI_ST_FAILURE


DATE = struct.pack("<bbhhHi", 0x3D, 0, 2024, 11, 25, (8 * 3600 + 4 * 60 + 5) * 1000)


@pytest.mark.parametrize(
    ("fmt", "zone", "expected"),
    [
        (py.IIAPI_EPV_DFRMT_US, "GMT", "25-nov-2024 08:04:05"),
        (py.IIAPI_EPV_DFRMT_ISO4, "GMT", "20241125 08:04:05"),
        (py.IIAPI_EPV_DFRMT_FINNISH, "GMT", "2024-11-25 08:04:05"),
        (py.IIAPI_EPV_DFRMT_GERMAN, "GMT", "25.11.2024 08:04:05"),
        (py.IIAPI_EPV_DFRMT_FINNISH, "GMT-10", "2024-11-24 22:04:05"),
        (py.IIAPI_EPV_DFRMT_FINNISH, "GMT+1", "2024-11-25 09:04:05"),
    ],
)
def test_format_data_honours_date_format_and_time_zone(
    env: int, fmt: int, zone: str, expected: str
) -> None:
    assert h.set_env(env, py.IIAPI_EP_DATE_FORMAT, fmt) == py.IIAPI_ST_SUCCESS
    assert h.set_env(env, py.IIAPI_EP_TIMEZONE, zone) == py.IIAPI_ST_SUCCESS
    status, text = h.format_date(env, h.ingresdate(DATE))
    assert status == py.IIAPI_ST_SUCCESS
    assert text == expected.ljust(32)  # CHA: blank padded to the declared length


def test_format_data_defaults_to_us_format(env: int) -> None:
    assert h.format_date(env, h.ingresdate(DATE)) == (0, "25-nov-2024 08:04:05".ljust(32))


def test_convert_data_uses_the_process_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("II_DATE_FORMAT", "SWEDEN")
    monkeypatch.setenv("II_TIMEZONE_NAME", "GMT2")
    _in_a_fresh_process("_convert_data_with_the_process_defaults")  # read at initialization


def _convert_data_with_the_process_defaults() -> None:
    with h.api():
        assert h.convert_date(h.ingresdate(DATE)) == (0, "2024-11-25 10:04:05".ljust(32))


def test_select_returns_rows_through_get_descriptor_and_get_columns(
    server: ServerThread, env: int
) -> None:
    s = h.connect(env, server.target("ingres", "secret"))
    qp = py.IIAPI_QUERYPARM()
    qp.qy_connHandle = s.conn
    qp.qy_queryText = b"select dbmsinfo('database')"
    qp.qy_tranHandle = s.tran
    py.IIapi_query(qp)
    assert h.wait(qp.qy_genParm) == py.IIAPI_ST_SUCCESS
    gd = py.IIAPI_GETDESCRPARM()
    gd.gd_stmtHandle = qp.qy_stmtHandle
    py.IIapi_getDescriptor(gd)
    assert h.wait(gd.gd_genParm) == py.IIAPI_ST_SUCCESS
    assert gd.gd_descriptorCount == 1
    desc = gd.gd_descriptor[0]
    assert desc.ds_dataType == py.IIAPI_VCH_TYPE
    buf = ctypes.create_string_buffer(desc.ds_length)
    data = (py.IIAPI_DATAVALUE * 1)()
    data[0].dv_value = ctypes.addressof(buf)
    gc = py.IIAPI_GETCOLPARM()
    gc.gc_stmtHandle = qp.qy_stmtHandle
    gc.gc_rowCount = 1
    gc.gc_columnCount = 1
    gc.gc_columnData = data
    py.IIapi_getColumns(gc)
    assert h.wait(gc.gc_genParm) == py.IIAPI_ST_SUCCESS
    (n,) = struct.unpack("=H", buf.raw[:2])
    assert buf.raw[2 : 2 + n] == b"demodb"
    py.IIapi_getColumns(gc)
    assert h.wait(gc.gc_genParm) == py.IIAPI_ST_NO_DATA
    gq = py.IIAPI_GETQINFOPARM()
    gq.gq_stmtHandle = qp.qy_stmtHandle
    py.IIapi_getQueryInfo(gq)
    assert h.wait(gq.gq_genParm) == py.IIAPI_ST_SUCCESS
    assert gq.gq_mask & py.IIAPI_GQ_ROW_COUNT
    assert gq.gq_rowCount == 1
    assert h.close_handle(qp.qy_stmtHandle) == (py.IIAPI_ST_SUCCESS, [])
    # A statement is open: autocommit cannot be turned off (E_AP0004).
    s.abort()


def test_syntax_error_reports_error_status(server: ServerThread, env: int) -> None:
    s = h.connect(env, server.target("ingres", "secret"))
    status, errs = s.run("this is not sql")
    assert status == py.IIAPI_ST_ERROR
    assert errs[0].sqlstate == "42000"
    s.autocommit_off()
    assert s.disconnect() == py.IIAPI_ST_SUCCESS


def test_format_data_refuses_nulls_and_non_character_targets(env: int) -> None:
    """As Actian Client 1.5 (tests/sim/test_differential.py, format_odd_cases)."""
    src = ctypes.create_string_buffer(struct.pack("<bbhhHi", 0x3D, 0, 2026, 1, 1, 0), 12)
    dst = ctypes.create_string_buffer(32)

    def format_into(dst_type: int, null: bool) -> int:
        fd = py.IIAPI_FORMATPARM()
        fd.fd_envHandle = env
        fd.fd_srcDesc.ds_dataType = py.IIAPI_DTE_TYPE
        fd.fd_srcDesc.ds_length = 12
        fd.fd_srcDesc.ds_nullable = null
        fd.fd_srcValue.dv_null = null
        fd.fd_srcValue.dv_length = 12
        fd.fd_srcValue.dv_value = ctypes.addressof(src)
        fd.fd_dstDesc.ds_dataType = dst_type
        fd.fd_dstDesc.ds_length = 32
        fd.fd_dstDesc.ds_nullable = True
        fd.fd_dstValue.dv_length = 32
        fd.fd_dstValue.dv_value = ctypes.addressof(dst)
        py.IIapi_formatData(fd)
        return int(fd.fd_status)

    assert format_into(py.IIAPI_CHA_TYPE, null=False) == py.IIAPI_ST_SUCCESS
    assert format_into(py.IIAPI_CHA_TYPE, null=True) == py.IIAPI_ST_FAILURE
    assert format_into(py.IIAPI_INT_TYPE, null=False) == py.IIAPI_ST_ERROR
