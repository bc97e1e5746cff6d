"""Actian's real client library against `dbevent-bridge sim serve` (opt-in: real_client).

The simulator answers the real library in Ingres's own protocol (PROTOCOL.md,
"Ingres's own protocol") on the same port as our own library's protocol.
Each scenario runs the real library in a child process (real_client_child.py).
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bridge.sim import control, gcc, wire
from bridge.sim.gcasession import GcaChannel, GcaConnection
from bridge.sim.server import Database, Session
from bridge.sim.sql import IngresError
from tests.sim.real_client import (
    check_abort_pending,
    check_read_without_catch,
    check_release_open_env,
    run_scenario,
)
from tests.sim.serve import sim_serve

pytestmark = pytest.mark.real_client

ST_SUCCESS = 0
ST_NO_DATA = 3
ST_ERROR = 4
ST_FAILURE = 5
GE_ERROR = 1
GE_WARNING = 2
IIAPI_INT_TYPE = 30
IIAPI_VCH_TYPE = 21


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with sim_serve() as (_, p):
        yield p


def _int(value_hex: str) -> int:
    return int.from_bytes(bytes.fromhex(value_hex), "little", signed=True)


def _varchar(value_hex: str) -> bytes:
    raw = bytes.fromhex(value_hex)
    length = int.from_bytes(raw[:2], "little")
    return raw[2 : 2 + length]


def _ok(result: dict[str, Any]) -> None:
    assert result["query"] == ST_SUCCESS, result
    assert result["status"] in (ST_SUCCESS, ST_NO_DATA), result
    assert result["errors"] == [], result


def test_connect_query_register_event_disconnect(
    real_ii_system: Path, tmp_path: Path, port: int
) -> None:
    before = time.time()
    r = run_scenario(
        real_ii_system,
        tmp_path,
        "basic",
        target=f"@127.0.0.1,tcp_ip,{port}::demodb",
        event="ev_basic",
        text="hello, world",
    )
    assert r["connect"] == {"status": ST_SUCCESS, "errors": [], "autocommit": ST_SUCCESS}
    select = r["select"]
    _ok(select)
    (column,) = select["columns"]
    assert column["type"] == IIAPI_INT_TYPE
    assert not column["nullable"]
    assert [[_int(v) for v in row] for row in select["rows"]] == [[1]]
    assert len(bytes.fromhex(select["rows"][0][0])) == column["length"]
    assert select["fetch_end"] == ST_NO_DATA
    assert select["rowcount"] == 1
    username = r["username"]
    _ok(username)
    assert username["columns"][0]["type"] == IIAPI_VCH_TYPE
    assert _varchar(username["rows"][0][0])  # the client's OS user, as the DBMS sees it
    for step in ("create", "register", "raise", "raise_no_text", "remove"):
        _ok(r[step])
    event = r["event"]
    assert event is not None, "the registered event never reached IIapi_catchEvent"
    assert (event["status"], event["name"], event["database"]) == (ST_SUCCESS, "ev_basic", "demodb")
    assert event["owner"] == _varchar(username["rows"][0][0]).decode()
    assert bytes.fromhex(event["text"]) == b"hello, world"
    raised = wire.decode_ingresdate(bytes.fromhex(event["time"])).timestamp()
    assert before - 1 <= raised <= time.time() + 1
    assert r["event_no_text"] is not None
    assert not r["event_no_text"]["info"]
    assert r["event_after_remove"] is None
    assert r["cancel_catch"] == ST_SUCCESS
    assert r["disconnect"] == ST_SUCCESS


def test_errors_arrive_as_the_server_sends_them(
    real_ii_system: Path, tmp_path: Path, port: int
) -> None:
    r = run_scenario(
        real_ii_system,
        tmp_path,
        "statements",
        target=f"@127.0.0.1,tcp_ip,{port}::errdb",
        sql=[
            "create dbevent ev_err",
            "register dbevent ev_err",
            "register dbevent ev_err",
            "raise dbevent ev_nosuch",
            "selec 1",
            "select 1",
        ],
    )
    created, registered, again, nosuch, syntax, after = r["results"]
    _ok(created)
    _ok(registered)
    for result in (again, nosuch, syntax):
        assert result["query"] == ST_SUCCESS
        assert result["status"] == ST_ERROR
    assert [(e["sqlstate"], e["code"]) for e in again["errors"]] == [("42502", 0x0006020C)]
    assert again["errors"][0]["message"].startswith("REGISTER DBEVENT: Dbevent '")
    assert [(e["sqlstate"], e["code"]) for e in nosuch["errors"]] == [("42505", 0x00050D3B)]
    assert nosuch["errors"][0]["message"] == ("RAISE DBEVENT: Dbevent 'ev_nosuch' does not exist.")
    assert [(e["sqlstate"], e["code"]) for e in syntax["errors"]] == [("42000", 0x000009C4)]
    # The stream stays in step after errors.
    _ok(after)
    assert [[_int(v) for v in row] for row in after["rows"]] == [[1]]


def test_messages_longer_than_a_packet_both_ways(
    real_ii_system: Path, tmp_path: Path, port: int
) -> None:
    long_name = "x" * 20_000  # a 20 KB query and a 20 KB error message: 3 packets each
    r = run_scenario(
        real_ii_system,
        tmp_path,
        "statements",
        target=f"@127.0.0.1,tcp_ip,{port}::demodb",
        sql=[f"raise dbevent {long_name}", "select 1" + " " * 20_000],
    )
    error, padded = r["results"]
    assert error["status"] == ST_ERROR
    (info,) = error["errors"]
    assert (info["sqlstate"], info["code"]) == ("42505", 0x00050D3B)
    assert info["message"] == f"RAISE DBEVENT: Dbevent '{long_name}' does not exist."
    _ok(padded)
    assert [[_int(v) for v in row] for row in padded["rows"]] == [[1]]


@pytest.fixture(scope="module")
def guarded_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    users = tmp_path_factory.mktemp("users") / "users.json"
    users.write_text('{"alice": "correct horse battery", "bob": "s3cret"}')
    with sim_serve("--users", str(users), "--database", "demodb") as (_, p):
        yield p


def test_credentials_are_checked_against_the_users(
    real_ii_system: Path, tmp_path: Path, guarded_port: int
) -> None:
    base = f"@127.0.0.1,tcp_ip,{guarded_port}"
    good = run_scenario(
        real_ii_system,
        tmp_path,
        "connect_only",
        target=f"{base}[alice,correct horse battery]::demodb",
    )
    assert good["status"] == ST_SUCCESS, good
    assert good["disconnect"] == ST_SUCCESS
    wrong = run_scenario(
        real_ii_system, tmp_path, "connect_only", target=f"{base}[bob,nope]::demodb"
    )
    none = run_scenario(real_ii_system, tmp_path, "connect_only", target=f"{base}::demodb")
    nodb = run_scenario(
        real_ii_system, tmp_path, "connect_only", target=f"{base}[bob,s3cret]::nosuchdb"
    )
    # A wrong or missing password: the remote end rejects the association
    # (gccal.c); the library reports E_GC000B, then the aborted connection.
    for refused in (wrong, none):
        assert refused["status"] == ST_FAILURE
        assert [(e["sqlstate"], e["code"]) for e in refused["errors"]] == [
            ("08004", 0x000C000B),
            ("08006", 0x00C90001),
        ]
        assert refused["errors"][0]["message"] == "Login failure: invalid username/password."
    # An unknown database: the DBMS rejects the session (GCA_REJECT).
    assert nodb["status"] == ST_ERROR
    assert [(e["sqlstate"], e["code"], e["type"]) for e in nodb["errors"]] == [
        ("08004", 0x00000010, GE_ERROR),
        ("08004", 0x00C9000E, GE_WARNING),
    ]
    assert nodb["errors"][0]["message"] == "Database does not exist: 'nosuchdb'."


class ScriptedCore:
    """A stand-in for the DBMS core that answers one query with a result the
    simulator itself never produces: nullable columns, NULLs, and an event
    between two rows, as a real DBMS may send it (sce_gcevent in scenotify.c
    puts the event message at the head of the session's outbound queue).
    """

    dba = "ingres"
    EVENT_TIME = wire.encode_ingresdate(1_700_000_000)

    def check_credentials(self, user: str, password: str | None) -> IngresError | None:
        return None

    def login(self, user: str, password: str | None, dbname: str, channel: GcaChannel) -> Session:
        return Session(1, user, Database(dbname, self.dba), channel)

    def execute(self, session: Session, text: bytes) -> bytes:
        if not text.startswith(b"select"):
            return wire.done_frame(True, 0)
        columns = [
            wire.Column("v", wire.IIAPI_VCH_TYPE, 12, nullable=True),
            wire.Column("i", wire.IIAPI_INT_TYPE, 4, nullable=True),
        ]
        event = wire.event_frame("ev_mid", "ingres", "demodb", self.EVENT_TIME, b"in between")
        return (
            wire.header_frame(columns)
            + wire.row_frame([b"abc", None])
            + event
            + wire.row_frame([None, struct.pack("<i", -7)])
            + wire.done_frame(True, 2)
        )

    def logout(self, session: Session) -> None:
        session.closed = True


@contextmanager
def scripted_server() -> Iterator[int]:
    """A GCA listener in a thread, on the scripted core; its port."""
    loop = asyncio.new_event_loop()
    core = ScriptedCore()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readexactly(4)
            assert gcc.looks_like_connect_request(head)
            await GcaConnection(core, head, reader, writer).run()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_nulls_and_an_event_inside_a_result(real_ii_system: Path, tmp_path: Path) -> None:
    with scripted_server() as scripted:
        r = run_scenario(
            real_ii_system,
            tmp_path,
            "event_inside_result",
            target=f"@127.0.0.1,tcp_ip,{scripted}::demodb",
            sql="select v, i from t",
        )
    result = r["result"]
    _ok(result)
    assert [(c["type"], c["length"], c["nullable"]) for c in result["columns"]] == [
        (IIAPI_VCH_TYPE, 12, True),
        (IIAPI_INT_TYPE, 4, True),
    ]
    (v1, i1), (v2, i2) = result["rows"]
    assert (_varchar(v1), i1) == (b"abc", None)
    assert (v2, _int(i2)) == (None, -7)
    assert result["rowcount"] == 2
    # The event between the rows reached the catch armed before the query.
    assert r["caught_during_query"]
    event = r["event"]
    assert (event["name"], event["owner"], event["database"]) == ("ev_mid", "ingres", "demodb")
    assert bytes.fromhex(event["text"]) == b"in between"
    assert bytes.fromhex(event["time"]) == ScriptedCore.EVENT_TIME
    assert r["disconnect"] == ST_SUCCESS


def test_cancel_gets_only_an_interrupt_ack_and_the_stream_stays_in_step(
    real_ii_system: Path, tmp_path: Path, port: int
) -> None:
    r = run_scenario(
        real_ii_system,
        tmp_path,
        "cancel",
        target=f"@127.0.0.1,tcp_ip,{port}::demodb",
        sql="select 1",
        rounds=20,
    )
    # Each cancel reached the server as GCA_ATTENTION (the statement's reply was
    # already on its way); the library purged that reply up to our GCA_IACK and
    # failed the query as cancelled.
    assert r["outcomes"] == [{"cancel": ST_SUCCESS, "query": ST_FAILURE}] * 20
    _ok(r["after"])
    assert [[_int(v) for v in row] for row in r["after"]["rows"]] == [[1]]
    assert r["disconnect"] == ST_SUCCESS
    trace = (tmp_path / "cancel.trace").read_text(errors="replace")
    assert trace.count("GCA_SEND msg=GCA_ATTENTION") == 20
    assert trace.count("GCA_RECEIVE msg=GCA_IACK") == 20


def test_an_event_is_pushed_to_an_idle_session(
    real_ii_system: Path, tmp_path: Path, port: int
) -> None:
    r = run_scenario(
        real_ii_system,
        tmp_path,
        "idle_push",
        target=f"@127.0.0.1,tcp_ip,{port}::idledb",
        host="127.0.0.1",
        port=port,
    )
    assert r["delivered"], "the simulator never delivered the event"
    # Nothing read the socket while the session was idle; getEvent with a zero
    # timeout finds the event already there.
    assert not r["completed_before_get_event"]
    event = r["event"]
    assert event is not None
    assert (event["name"], event["database"]) == ("ev_idle", "idledb")
    assert bytes.fromhex(event["text"]) == b"while idle"
    assert r["disconnect"] == ST_SUCCESS


def test_co_username_and_co_password_are_the_remote_login(
    real_ii_system: Path, tmp_path: Path, guarded_port: int
) -> None:
    """The bridge's ingres.user/password settings: IIapi_connect's co_username and
    co_password, which the library sends as the remote login (GCA_RQ_REMPW,
    aip/apilower.c), the same as `[user,password]` in the target."""
    target = f"@127.0.0.1,tcp_ip,{guarded_port}::demodb"
    good = run_scenario(
        real_ii_system, tmp_path, "connect_only", target=target,
        user="alice", password="correct horse battery",
    )  # fmt: skip
    assert good["status"] == ST_SUCCESS, good
    wrong = run_scenario(
        real_ii_system, tmp_path, "connect_only", target=target, user="alice", password="nope"
    )
    assert wrong["status"] == ST_FAILURE
    assert [e["code"] for e in wrong["errors"]] == [0x000C000B, 0x00C90001]


def test_fault_controls_apply_to_the_real_client(real_ii_system: Path, tmp_path: Path) -> None:
    """`sim ctl delay` and `clock` act on real-client sessions as on ours: the
    event comes later and is stamped by the DBMS clock, an hour ahead here."""
    with sim_serve() as (_, p):
        control.clock("127.0.0.1", p, 3600.0)
        control.delay("127.0.0.1", p, 300.0)
        before = time.time()
        r = run_scenario(
            real_ii_system, tmp_path, "basic", target=f"@127.0.0.1,tcp_ip,{p}::demodb",
            event="ev_ctl", text="later",
        )  # fmt: skip
        stats = control.stats("127.0.0.1", p)
    event = r["event"]
    assert event is not None
    assert bytes.fromhex(event["text"]) == b"later"
    raised = wire.decode_ingresdate(bytes.fromhex(event["time"])).timestamp()
    assert before + 3600 - 1 <= raised <= time.time() + 3600 + 1
    assert stats["delay_ms"] == 300.0


def test_an_event_read_with_no_catch_posted_is_discarded(
    real_ii_system: Path, tmp_path: Path, port: int
) -> None:
    """The real library's rule that the bridge's Session.register works around
    (tests/sim/test_openapi_events.py asserts the same of the simulator's library)."""
    report = run_scenario(
        real_ii_system, tmp_path, "read_without_catch",
        target=f"@127.0.0.1,tcp_ip,{port}::demodb", host="127.0.0.1", port=port,
        event="ev_nocatch",
    )  # fmt: skip
    check_read_without_catch(report)


def test_abort_fails_the_waiting_get_event_at_once_and_completes_in_a_wait(
    real_ii_system: Path, tmp_path: Path, port: int
) -> None:
    """tests/sim/test_openapi_faults.py asserts the same of the simulator's library."""
    report = run_scenario(real_ii_system, tmp_path, "abort_pending",
                          target=f"@127.0.0.1,tcp_ip,{port}::demodb")  # fmt: skip
    check_abort_pending(report)


def test_releasing_an_environment_drops_its_open_connection_with_a_warning(
    real_ii_system: Path, tmp_path: Path, port: int
) -> None:
    """tests/sim/test_openapi_faults.py asserts the same of the simulator's library."""
    report = run_scenario(real_ii_system, tmp_path, "release_open_env",
                          target=f"@127.0.0.1,tcp_ip,{port}::demodb")  # fmt: skip
    check_release_open_env(report)
