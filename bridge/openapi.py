"""The Ingres OpenAPI, as the bridge uses it: the only module that touches pyngres and ctypes.

Everything here is synchronous and must run on one thread per `Session` (the
catcher's): the OpenAPI makes progress only inside `IIapi_wait`, and a
session's calls must not interleave. ctypes releases the GIL during every
foreign call, so a thread blocked here never stalls the event loop.

`import pyngres` quits the process when `II_SYSTEM` is unset and fails in a
ctypes error when the library is missing, so it is imported lazily, after
`check_ii_system` has said what is wrong in words an operator understands.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from bridge.event import DBEvent

log = logging.getLogger("bridge.openapi")

# Status codes (iiapi.h); pyngres defines them too, but this module must be
# importable before pyngres is.
ST_SUCCESS = 0
ST_WARNING = 2
ST_NO_DATA = 3
ST_ERROR = 4
ST_FAILURE = 5
_STATUS_NAMES = {
    0: "SUCCESS", 1: "MESSAGE", 2: "WARNING", 3: "NO_DATA", 4: "ERROR",
    5: "FAILURE", 6: "NOT_INITIALIZED", 7: "INVALID_HANDLE", 8: "OUT_OF_MEMORY",
}

E_AP_BASE = 0xC90000
E_AP0001_CONNECTION_ABORTED = E_AP_BASE + 0x0001

# The OpenAPI version the bridge asks for: the lowest that has every call and
# field it uses. Version 2 added the environment handle (`in_envHandle`, which
# `IIapi_setEnvParam`, `IIapi_formatData` and `IIapi_releaseEnv` take) and
# `co_type` (iiapi.h: "Version 2 parameters"; API Version History); nothing
# the bridge touches is gated higher (`gq_rowCountEx` is version 10, query
# flags version 6, and the bridge uses neither). Every runtime accepts it:
# IIapi_initialize refuses only versions above its own IIAPI_VERSION
# (aip/apiinit.c): 8 for Ingres 10, 11 for Actian Client 1.5. At version 2
# the library asks the server for GCA protocol level 63 (aip/apilower.c),
# which already carries SQLSTATEs and the server's own error codes.
API_VERSION = 2

# Error classes (the high 16 bits of an error code), from the message files'
# `_xx_CLASS` defines (src/common/hdr/hdr/er*.msg), to name codes as Ingres does.
_ERROR_CLASSES = {
    0: "US", 1: "CL", 2: "AD", 3: "DM", 4: "OP", 5: "PS", 6: "QE", 7: "QS", 8: "RD",
    9: "SC", 11: "DU", 12: "GC", 13: "RQ", 14: "TP", 15: "GW", 16: "SX", 19: "CU", 201: "AP",
}


def error_name(code: int) -> str:
    """An Ingres error code as its documented name (0xC000B -> E_GC000B), else in hex."""
    facility = _ERROR_CLASSES.get(code >> 16)
    return f"E_{facility}{code & 0xFFFF:04X}" if facility and code > 0 else hex(code)

# Longest event text Ingres carries, plus the VARCHAR's 2-byte length.
_EVENT_TEXT_MAX = 256
_VCH_BUFFER = _EVENT_TEXT_MAX + 2

# The DBMS's clock, POSIX seconds as text (adu_dbmsinfo; the ADK_BINTIM query constant).
_DBMS_TIME_QUERY = "select dbmsinfo('_bintim')"

# How long one IIapi_wait may block. Bounded so that a wedged connection is
# noticed by the caller's deadline rather than hanging the thread for ever.
_WAIT_SLICE_MS = 1000

# How long closing waits for IIapi_abort. Actian's library completes an abort
# only once the peer answers (aip/apisqlc.c), which a half-open peer never
# does; every second waited is a second with no session registered. Past this
# bound the connection is left to the library (`_abandon_environment`), which
# is safe, and the caller reconnects at once.
_ABORT_WAIT_S = 1.0


# What sessions whose abort never completed left to the library (see
# Session._abandon_environment): the environment handle and the parameter blocks
# of the operations still pending, which the library may write to at any later
# IIapi_wait, so they are never freed. One entry per such session.
_ABANDONED: list[tuple[Any, ...]] = []


class OpenAPIUnavailableError(RuntimeError):
    """The Ingres client runtime (II_SYSTEM, libiiapi.1.so) is not usable."""


def check_ii_system(environ: Mapping[str, str] | None = None) -> Path:
    """Return the OpenAPI library's path, or raise OpenAPIUnavailableError saying why not."""
    env = os.environ if environ is None else environ
    ii_system = env.get("II_SYSTEM", "")
    if not ii_system:
        raise OpenAPIUnavailableError(
            "II_SYSTEM is not set: point it at the Ingres client installation (the folder "
            "that holds ingres/lib/libiiapi.1.so), or run `dbevent-bridge sim ii-system` "
            "to build the simulator's library"
        )
    library = Path(ii_system) / "ingres" / "lib" / "libiiapi.1.so"
    if not library.is_file():
        raise OpenAPIUnavailableError(
            f"II_SYSTEM={ii_system} has no ingres/lib/libiiapi.1.so: is the Ingres client "
            "runtime installed there?"
        )
    return library


_pyngres: ModuleType | None = None


def load_pyngres() -> ModuleType:
    """Import pyngres once, after checking that it can load the OpenAPI library."""
    global _pyngres  # noqa: PLW0603 (one module-wide binding, loaded on first use)
    if _pyngres is None:
        check_ii_system()
        import pyngres

        _pyngres = pyngres
    return _pyngres


def accepted_api_versions(limit: int = 32) -> range:
    """The `in_version` values the loaded library accepts: 1 up to its own IIAPI_VERSION.

    IIapi_initialize refuses any version above the library's own (aip/apiinit.c),
    so the first refusal ends the range. Empty when it refuses even version 1
    (a client without time-zone configuration fails every initialisation).
    """
    py = load_pyngres()
    highest = 0
    for version in range(1, limit + 1):
        init = py.IIAPI_INITPARM()
        init.in_version = version
        init.in_timeout = -1
        py.IIapi_initialize(init)
        if init.in_status != ST_SUCCESS:
            break
        highest = version
        if version >= 2:
            release = py.IIAPI_RELENVPARM()
            release.re_envHandle = init.in_envHandle
            py.IIapi_releaseEnv(release)
        py.IIapi_terminate(py.IIAPI_TERMPARM())
    return range(1, highest + 1)


@dataclass(frozen=True, slots=True)
class ApiError:
    """One entry of an OpenAPI error list (`IIapi_getErrorInfo`)."""

    type: int
    sqlstate: str
    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.message.strip()} (SQLSTATE {self.sqlstate}, {error_name(self.code)})"


class OpenAPIError(Exception):
    """An OpenAPI call completed with an error status."""

    def __init__(self, operation: str, status: int, errors: list[ApiError]) -> None:
        self.operation = operation
        self.status = status
        self.errors = errors
        detail = "; ".join(str(e) for e in errors) or "no error information"
        super().__init__(f"{operation} failed ({_STATUS_NAMES.get(status, status)}): {detail}")

    @property
    def connection_lost(self) -> bool:
        """True when the session is gone (E_AP0001 or a communication SQLSTATE 08xxx)."""
        return any(
            e.code == E_AP0001_CONNECTION_ABORTED or e.sqlstate.startswith("08")
            for e in self.errors
        )



class SessionTimeoutError(OpenAPIError):
    """An operation did not complete within the caller's deadline (a half-open session)."""


# ISO4 is "yyyymmdd hh:mm:ss" in Ingres; the dashed form is accepted too, in
# case a client runtime renders it so.
_ISO4_FORMATS = ("%Y%m%d %H:%M:%S", "%Y-%m-%d %H:%M:%S")


def _parse_iso4(text: str) -> datetime | None:
    for fmt in _ISO4_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _second_key(raw: bytes) -> bytes:
    """What an ingresdate's whole second depends on: all of it but the milliseconds.

    In the 12-byte layout the last i4 is milliseconds since midnight; its
    second (not its millisecond) goes into the key. Other lengths: all bytes.
    """
    if len(raw) != 12:
        return raw
    second_of_day: int = struct.unpack_from("=i", raw, 8)[0] // 1000
    return raw[:8] + second_of_day.to_bytes(4, "little", signed=True)


def _describe(sql: str | bytes) -> str:
    text = sql.decode("utf-8", "replace") if isinstance(sql, bytes) else sql
    return text if len(text) <= 80 else text[:77] + "..."


def _text(value: bytes | None) -> str:
    # Names come back blank-padded in real Ingres; trimming is documented behaviour.
    return (value or b"").decode("utf-8", "replace").strip()


class Session:
    """One Ingres session that registers DBEvents and catches them, on one thread."""

    def __init__(
        self,
        target: str,
        user: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._py = load_pyngres()
        self._target = target
        self._user = user
        self._password = password
        self._timeout_s = timeout_s
        self._env: int | None = None
        self._conn: int | None = None
        self._tran: int | None = None
        self._event_handle: int | None = None
        self._catch: Any = None
        self._catch_armed = False
        self._text_buffer = ctypes.create_string_buffer(_VCH_BUFFER)
        # The last event time's whole second, by `_second_key`: a burst of events
        # raised within one second formats and parses it once, not per event.
        self._second_cache: tuple[bytes, datetime] | None = None
        # Set once an operation got no answer in time: the peer is gone or
        # half-open, so closing aborts locally instead of waiting for replies.
        self._unresponsive = False
        # Operations started and not yet completed (see `_start`), keyed by the
        # address of their generic parameters: each parameter block, with the
        # buffers it points to, stays alive until the library is done with it.
        self._in_flight: dict[int, tuple[Any, ...]] = {}

    # -- lifecycle ---------------------------------------------------------

    def open(self) -> None:
        """Initialise an environment, connect, and turn autocommit on."""
        self.initialize()
        py = self._py
        parm = py.IIAPI_CONNPARM()
        parm.co_target = self._target.encode()
        # pyngres leaves co_type 0; from in_version 2 on the real library then
        # fails the connect with FAILURE and no error handle (aip/apiconn.c).
        parm.co_type = py.IIAPI_CT_SQL
        if self._user:
            parm.co_username = self._user.encode()
        if self._password:
            parm.co_password = self._password.encode()
        parm.co_timeout = int(self._timeout_s * 1000)
        parm.co_connHandle = self._env
        self._start(py.IIapi_connect, parm, parm.co_genParm)
        self._complete("connect", parm.co_genParm)
        self._conn = parm.co_connHandle
        auto = py.IIAPI_AUTOPARM()
        auto.ac_connHandle = self._conn
        self._start(py.IIapi_autocommit, auto, auto.ac_genParm)
        self._complete("autocommit on", auto.ac_genParm)
        self._tran = auto.ac_tranHandle
        # Armed before any REGISTER DBEVENT: an event that reaches the library
        # between a registration and the catcher's first wait then finds a
        # catch outstanding (the simulator's library drops events no catch
        # claims), instead of depending on how soon that wait comes.
        self._arm()

    def close(self) -> None:
        """Release everything; after a lost connection, abort instead of disconnecting."""
        try:
            if self._conn is not None:
                try:
                    if self._unresponsive:
                        raise SessionTimeoutError("close", ST_FAILURE, [])
                    self._close_politely()
                except OpenAPIError:
                    self._abort()
        finally:
            self._conn = None
            self._tran = None
            self._event_handle = None
            self._catch_armed = False
            self._forget_completed()
            if self._in_flight:
                self._abandon_environment()
            else:
                self._release_environment()

    def _abandon_environment(self) -> None:
        """Leave a connection whose abort never completed to the library, for good.

        Releasing its environment would free the library's connection handle
        while GCA still holds requests for it: the next IIapi_wait (the next
        session's) then dispatches their completion into freed memory, a
        SIGSEGV with Actian's library (tests/integration/test_openapi.py). Kept
        instead, with the parameter blocks still pending, the library completes
        them harmlessly whenever the connection finally moves or fails.
        """
        log.warning(
            "the Ingres connection did not close (%d operation(s) still pending): it is left to "
            "the client library, its environment unreleased, for the life of the process",
            len(self._in_flight), extra={"side": "ingres"},
        )
        _ABANDONED.append((self._env, *self._in_flight.values()))
        self._in_flight.clear()
        self._env = None

    def _close_politely(self) -> None:
        py = self._py
        if self._event_handle is not None:
            if self._catch_armed:
                cancel = py.IIAPI_CANCELPARM()
                cancel.cn_stmtHandle = self._event_handle
                self._start(py.IIapi_cancel, cancel, cancel.cn_genParm)
                self._complete("cancel catch", cancel.cn_genParm)
                self._complete_ignoring_errors(self._catch.ce_genParm)
                self._catch_armed = False
            close = py.IIAPI_CLOSEPARM()
            close.cl_stmtHandle = self._event_handle
            self._start(py.IIapi_close, close, close.cl_genParm)
            self._complete("close event handle", close.cl_genParm)
            self._event_handle = None
        if self._tran is not None:
            auto = py.IIAPI_AUTOPARM()
            auto.ac_connHandle = self._conn
            auto.ac_tranHandle = self._tran
            self._start(py.IIapi_autocommit, auto, auto.ac_genParm)
            self._complete("autocommit off", auto.ac_genParm)
            self._tran = None
        disconnect = py.IIAPI_DISCONNPARM()
        disconnect.dc_connHandle = self._conn
        self._start(py.IIapi_disconnect, disconnect, disconnect.dc_genParm)
        self._complete("disconnect", disconnect.dc_genParm)

    def _abort(self) -> None:
        parm = self._py.IIAPI_ABORTPARM()
        parm.ab_connHandle = self._conn
        self._start(self._py.IIapi_abort, parm, parm.ab_genParm)
        deadline = time.monotonic() + min(self._timeout_s, _ABORT_WAIT_S)
        self._complete_ignoring_errors(parm.ab_genParm, deadline)

    def initialize(self) -> None:
        """Initialise the OpenAPI at `API_VERSION` and set the event-time format (once)."""
        if self._env is not None:
            return
        py = self._py
        init = py.IIAPI_INITPARM()
        init.in_version = API_VERSION
        init.in_timeout = -1
        py.IIapi_initialize(init)
        if init.in_status != ST_SUCCESS:
            # The library says nothing more; a missing time-zone setup is the usual cause.
            raise OpenAPIError(f"IIapi_initialize(in_version={API_VERSION})", init.in_status, [])
        self._env = init.in_envHandle
        log.debug("OpenAPI initialised at in_version %d", API_VERSION, extra={"side": "ingres"})
        # Event times are formatted by the OpenAPI itself, in a fixed format and
        # zone, so that no locale default can change what we read.
        self._set_env_param(py.IIAPI_EP_TIMEZONE, ctypes.c_char_p(b"GMT"))
        self._set_env_param(py.IIAPI_EP_DATE_FORMAT, ctypes.c_long(py.IIAPI_EPV_DFRMT_ISO4))

    def _set_env_param(self, param_id: int, value: ctypes.c_char_p | ctypes.c_long) -> None:
        py = self._py
        parm = py.IIAPI_SETENVPRMPARM()
        parm.se_envHandle = self._env
        parm.se_paramID = param_id
        if isinstance(value, ctypes.c_char_p):
            parm.se_paramValue = ctypes.cast(value, ctypes.c_void_p)
        else:
            parm.se_paramValue = ctypes.addressof(value)
        py.IIapi_setEnvParam(parm)
        if parm.se_status != ST_SUCCESS:
            raise OpenAPIError(f"IIapi_setEnvParam({param_id})", parm.se_status, [])

    def _release_environment(self) -> None:
        py = self._py
        if self._env is not None:
            release = py.IIAPI_RELENVPARM()
            release.re_envHandle = self._env
            py.IIapi_releaseEnv(release)
            py.IIapi_terminate(py.IIAPI_TERMPARM())
            self._env = None

    # -- statements --------------------------------------------------------

    def execute(self, sql: str | bytes) -> int:
        """Run one statement that returns no rows; return the row count."""
        py = self._py
        query = self._start_query(sql)
        stmt = query.qy_stmtHandle
        try:
            info = py.IIAPI_GETQINFOPARM()
            info.gq_stmtHandle = stmt
            self._start(py.IIapi_getQueryInfo, info, info.gq_genParm)
            self._complete(_describe(sql), info.gq_genParm)
            return int(info.gq_rowCount)
        finally:
            self._close_statement(stmt)

    def probe(self, timeout_s: float) -> datetime:
        """Prove the session answers within `timeout_s` in all; return the DBMS clock.

        Its own deadline, shorter than the session's operation timeout: a
        half-open session must be found in seconds, while a connect to a busy
        server may legitimately take longer. The answer is the DBMS's time in
        whole seconds, rounded down (`dbmsinfo('_bintim')`, fixed per
        transaction, and every statement here is one): the clock that stamps
        events, so that gap windows never mix it with this host's clock.
        """
        py = self._py
        deadline = time.monotonic() + timeout_s
        query = self._start_query(_DBMS_TIME_QUERY, deadline)
        stmt = query.qy_stmtHandle
        try:
            descr = py.IIAPI_GETDESCRPARM()
            descr.gd_stmtHandle = stmt
            self._start(py.IIapi_getDescriptor, descr, descr.gd_genParm)
            self._complete("dbms time: descriptor", descr.gd_genParm, deadline)
            # Read now: the descriptor is the API's memory, gone with the statement.
            varchar = int(descr.gd_descriptor[0].ds_dataType) == py.IIAPI_VCH_TYPE
            value = ctypes.create_string_buffer(int(descr.gd_descriptor[0].ds_length))
            data = (py.IIAPI_DATAVALUE * 1)()
            data[0].dv_length = len(value)
            data[0].dv_value = ctypes.addressof(value)
            cols = py.IIAPI_GETCOLPARM()
            cols.gc_stmtHandle = stmt
            cols.gc_rowCount = 1
            cols.gc_columnCount = 1
            cols.gc_columnData = data
            self._start(py.IIapi_getColumns, cols, cols.gc_genParm, data, value)
            self._complete("dbms time: columns", cols.gc_genParm, deadline)
        finally:
            self._close_statement(stmt, deadline)
        raw = value.raw
        if varchar:
            (length,) = struct.unpack_from("=H", raw)
            raw = raw[2 : 2 + length]
        text = raw.decode("ascii", "replace").strip(" \0")
        if not text.isdigit():
            raise OpenAPIError(f"{_DBMS_TIME_QUERY}: unexpected answer {text!r}", ST_FAILURE, [])
        return datetime.fromtimestamp(int(text), UTC)

    def _start_query(self, sql: str | bytes, deadline: float | None = None) -> Any:
        py = self._py
        query = py.IIAPI_QUERYPARM()
        query.qy_connHandle = self._conn
        query.qy_queryType = py.IIAPI_QT_QUERY
        # Bytes pass through untouched: event text need not be valid UTF-8.
        query.qy_queryText = sql if isinstance(sql, bytes) else sql.encode()
        query.qy_tranHandle = self._tran
        self._start(py.IIapi_query, query, query.qy_genParm)
        try:
            self._complete(_describe(sql), query.qy_genParm, deadline)
        except OpenAPIError:
            self._close_statement(query.qy_stmtHandle, deadline)
            raise
        return query

    def _close_statement(self, stmt: int | None, deadline: float | None = None) -> None:
        if stmt is None:
            return
        close = self._py.IIAPI_CLOSEPARM()
        close.cl_stmtHandle = stmt
        self._start(self._py.IIapi_close, close, close.cl_genParm)
        self._complete_ignoring_errors(close.cl_genParm, deadline)

    # -- events ------------------------------------------------------------

    def register(self, event: str) -> None:
        """REGISTER DBEVENT `event`, with a catch posted before the first registration.

        The OpenAPI hands each event it reads to the catches posted at that
        moment and discards it when none matches (aip/apiehndl.c,
        dispatch_dbev); it reads events during any statement, so an event raised
        right after one REGISTER would be lost in the next REGISTER (or a probe)
        unless a catch were already posted. IIAPI_EP_EVENT_FUNC would not save
        it: its IIAPI_EVENTPARM carries no event text. From here on the event
        handle is always either waiting or holding the event it caught, and
        while it holds one the API queues later events for it (processDbevCB),
        until the session closes.
        """
        if self._event_handle is None:
            self._arm()
        self.execute(f"register dbevent {event}")

    def next_event(self, timeout_ms: int) -> DBEvent | None:
        """Wait up to `timeout_ms` for the next DBEvent; None when none came."""
        if not self._catch_armed:
            self._arm()
        if not self._catch.ce_genParm.gp_completed:
            # Events that reached the API while the handle was busy complete
            # the re-armed catch without I/O; only read the socket otherwise.
            self._read_events(timeout_ms)
        if not self._catch.ce_genParm.gp_completed:
            return None
        self._catch_armed = False
        self._check("catch event", self._catch.ce_genParm)
        return self._take_event()

    def _arm(self) -> None:
        py = self._py
        catch = py.IIAPI_CATCHEVENTPARM()
        catch.ce_connHandle = self._conn
        catch.ce_eventHandle = self._event_handle
        self._start(py.IIapi_catchEvent, catch, catch.ce_genParm)
        self._event_handle = catch.ce_eventHandle
        self._catch = catch
        self._catch_armed = True

    def _read_events(self, timeout_ms: int) -> None:
        parm = self._py.IIAPI_GETEVENTPARM()
        parm.gv_connHandle = self._conn
        parm.gv_timeout = timeout_ms
        self._start(self._py.IIapi_getEvent, parm, parm.gv_genParm)
        deadline = time.monotonic() + timeout_ms / 1000 + self._timeout_s
        status = self._wait_for(parm.gv_genParm, deadline, "get event")
        if status not in (ST_SUCCESS, ST_WARNING):  # WARNING: the timeout passed
            self._check("get event", parm.gv_genParm)

    def _take_event(self) -> DBEvent:
        catch = self._catch
        text = self._read_text() if catch.ce_eventInfoAvail else None
        raw_time = ctypes.string_at(catch.ce_eventTime.dv_value, catch.ce_eventTime.dv_length)
        return DBEvent(
            database=_text(catch.ce_eventDB),
            owner=_text(catch.ce_eventOwner),
            name=_text(catch.ce_eventName),
            raised_at=self.event_time(raw_time),
            text=text,
        )

    def _read_text(self) -> bytes | None:
        py = self._py
        descr = py.IIAPI_GETDESCRPARM()
        descr.gd_stmtHandle = self._event_handle
        self._start(py.IIapi_getDescriptor, descr, descr.gd_genParm)
        self._complete("event text: descriptor", descr.gd_genParm)
        data = (py.IIAPI_DATAVALUE * 1)()
        data[0].dv_length = _VCH_BUFFER
        data[0].dv_value = ctypes.addressof(self._text_buffer)
        cols = py.IIAPI_GETCOLPARM()
        cols.gc_stmtHandle = self._event_handle
        cols.gc_rowCount = 1
        cols.gc_columnCount = 1
        cols.gc_columnData = data
        self._start(py.IIapi_getColumns, cols, cols.gc_genParm, data, self._text_buffer)
        status = self._complete("event text: columns", cols.gc_genParm)
        if status == ST_NO_DATA or data[0].dv_null:
            return None
        (length,) = struct.unpack_from("=H", self._text_buffer.raw)
        return self._text_buffer.raw[2 : 2 + min(length, _EVENT_TEXT_MAX)]

    def event_time(self, raw: bytes) -> datetime:
        """Turn an ingresdate into an aware UTC datetime, through IIapi_formatData.

        ISO4 text has whole seconds; the milliseconds come from the documented
        12-byte layout (i4 milliseconds since midnight, GMT), and both must agree
        on the second or the value is refused.
        """
        key = _second_key(raw)
        cached = self._second_cache
        if cached is not None and cached[0] == key:
            seconds = cached[1]
        else:
            parsed = self._format_seconds(raw)
            if parsed is None:
                return datetime.now(UTC)
            seconds = parsed
            self._second_cache = (key, seconds)
        millis_of_day = struct.unpack_from("=i", raw, 8)[0] if len(raw) == 12 else 0
        if millis_of_day // 1000 % 60 == seconds.second:
            return seconds + timedelta(milliseconds=millis_of_day % 1000)
        return seconds

    def _format_seconds(self, raw: bytes) -> datetime | None:
        """The whole second an ingresdate stands for (formatted by the OpenAPI), or None."""
        py = self._py
        src = ctypes.create_string_buffer(raw, len(raw))
        dst = ctypes.create_string_buffer(64)
        parm = py.IIAPI_FORMATPARM()
        parm.fd_envHandle = self._env
        parm.fd_srcDesc.ds_dataType = py.IIAPI_DTE_TYPE
        parm.fd_srcDesc.ds_length = len(raw)
        parm.fd_srcValue.dv_length = len(raw)
        parm.fd_srcValue.dv_value = ctypes.addressof(src)
        parm.fd_dstDesc.ds_dataType = py.IIAPI_CHA_TYPE
        parm.fd_dstDesc.ds_length = len(dst) - 1
        parm.fd_dstValue.dv_length = len(dst) - 1
        parm.fd_dstValue.dv_value = ctypes.addressof(dst)
        py.IIapi_formatData(parm)
        if parm.fd_status != ST_SUCCESS:
            raise OpenAPIError("IIapi_formatData(event time)", parm.fd_status, [])
        text = dst.raw[: parm.fd_dstValue.dv_length].decode("ascii", "replace").strip()
        seconds = _parse_iso4(text)
        if seconds is None:
            # Never lose the event over its time stamp: keep it, say so.
            log.error("unexpected event time %r from IIapi_formatData; using the catch time", text)
        return seconds

    # -- completion --------------------------------------------------------

    def _start(
        self, call: Callable[[Any], None], parm: Any, gen: Any, *buffers: Any
    ) -> None:
        """Start an asynchronous OpenAPI call; `parm` and `buffers` live until it completes.

        The library writes an operation's results and its completion into the
        parameter block (and the buffers it points to) whenever it completes
        it, which may be long after we stopped waiting: a probe that timed out
        on a half-open session leaves its operations pending, and the library
        completes them when the connection moves again, or fails each with
        E_AP0001 when IIapi_abort's disconnect completes, before reporting
        the abort itself (aip/apisqlc.c, action PEND). Freeing the block
        earlier lets the library write into, and call a callback from, freed
        memory. So every block stays in `_in_flight` until the library marks it
        completed; a session closed with blocks still pending keeps them for
        good (`_abandon_environment`).
        """
        self._in_flight[ctypes.addressof(gen)] = (gen, parm, *buffers)
        call(parm)

    def _complete(self, operation: str, gen: Any, deadline: float | None = None) -> int:
        """Wait (until `deadline`, else the session's timeout); raise unless it succeeded."""
        self._wait_for(gen, deadline or time.monotonic() + self._timeout_s, operation)
        return self._check(operation, gen)

    def _complete_ignoring_errors(self, gen: Any, deadline: float | None = None) -> None:
        with contextlib.suppress(SessionTimeoutError):
            self._wait_for(gen, deadline or time.monotonic() + self._timeout_s, "cleanup")

    def _wait_for(self, gen: Any, deadline: float, operation: str) -> int:
        wait = self._py.IIAPI_WAITPARM()
        while not gen.gp_completed:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                self._unresponsive = True
                raise SessionTimeoutError(operation, ST_FAILURE, [])
            wait.wt_timeout = min(remaining_ms, _WAIT_SLICE_MS)
            self._py.IIapi_wait(wait)
        self._forget_completed()
        return int(gen.gp_status)

    def _forget_completed(self) -> None:
        """Let go of the parameter blocks the library has completed (see `_start`)."""
        done = [key for key, (gen, *_) in self._in_flight.items() if gen.gp_completed]
        for key in done:
            del self._in_flight[key]

    def _check(self, operation: str, gen: Any) -> int:
        status = int(gen.gp_status)
        if status in (ST_SUCCESS, ST_WARNING, ST_NO_DATA):
            return status
        raise OpenAPIError(operation, status, self._errors(gen.gp_errorHandle))

    def _errors(self, handle: int | None) -> list[ApiError]:
        errors: list[ApiError] = []
        if not handle:
            return errors
        parm = self._py.IIAPI_GETEINFOPARM()
        parm.ge_errorHandle = handle
        while True:
            self._py.IIapi_getErrorInfo(parm)
            if parm.ge_status != ST_SUCCESS:
                return errors
            errors.append(
                ApiError(
                    type=int(parm.ge_type),
                    sqlstate=parm.ge_SQLSTATE.decode("ascii", "replace"),
                    code=int(parm.ge_errorCode),
                    message=(parm.ge_message or b"").decode("utf-8", "replace"),
                )
            )
