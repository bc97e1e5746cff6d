"""The DBMS simulator's dbevent semantics, driven through the wire protocol."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from bridge.sim.server import SimServer
from bridge.sim.wire import SessionRefusedError, SimClient
from tests.polling import eventually


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(dba="ingres") as server:
        yield server


_NAMES = {
    0x9C4: "E_US09C4",
    0x6020A: "E_QE020A",
    0x6020B: "E_QE020B",
    0x6020C: "E_QE020C",
    0x6020D: "E_QE020D",
    0x50D35: "E_PS0D35",
    0x50D36: "E_PS0D36",
    0x50D38: "E_PS0D38",
    0x50420: "E_PS0420",
    0x50421: "E_PS0421",
    0x50551: "E_PS0551",
    0x50563: "E_PS0563",
    0x50D3B: "E_PS0D3B",
    0x50D3C: "E_PS0D3C",
}


async def _failed(client: SimClient, sql: str) -> tuple[str, str, int]:
    """Run a statement that must fail; (error name, sqlstate, code) of its one error."""
    result = await client.query(sql)
    assert not result.ok
    assert len(result.errors) == 1
    err = result.errors[0]
    return _NAMES[err.code], err.sqlstate, err.code


async def test_connect_reports_version_database_and_user(sim: SimServer) -> None:
    client = await sim.session("alice", "salesdb")
    assert client.accepted[1:] == ("salesdb", "alice")
    assert client.accepted[0]
    await client.close()


async def test_only_registered_sessions_receive(sim: SimServer) -> None:
    owner = await sim.session()
    other = await sim.session()
    await owner.ok("create dbevent ev")
    await owner.ok("register dbevent ev")
    await owner.ok("raise dbevent ev 'hi'")
    event = await owner.next_event()
    assert event is not None
    assert (event.name, event.owner, event.database, event.text) == (
        "ev",
        "ingres",
        "demodb",
        b"hi",
    )
    assert await other.next_event(0.2) is None
    await owner.close()
    await other.close()


async def test_register_twice_and_remove_unregistered(sim: SimServer) -> None:
    client = await sim.session()
    await client.ok("create dbevent ev")
    await client.ok("register dbevent ev")
    assert await _failed(client, "register dbevent ev") == ("E_QE020C", "42502", 0x6020C)
    again = await client.query("register dbevent ev")
    assert again.errors[0].message == (
        "REGISTER DBEVENT: Dbevent 'ingres.ev' is already registered. "
        "This new registration is ignored."
    )
    await client.ok("remove dbevent ev")
    assert await _failed(client, "remove dbevent ev") == ("E_QE020D", "42505", 0x6020D)
    await client.close()


async def test_events_already_queued_stay_after_remove(sim: SimServer) -> None:
    client = await sim.session()
    raiser = await sim.session()
    await client.ok("create dbevent ev")
    await client.ok("register dbevent ev")
    await raiser.ok("raise dbevent ingres.ev 'one'")
    await client.ok("remove dbevent ev")
    await raiser.ok("raise dbevent ingres.ev 'two'")
    first = await client.next_event()
    assert first is not None
    assert first.text == b"one"
    assert await client.next_event(0.2) is None
    await client.close()
    await raiser.close()


async def test_nonexistent_event_errors(sim: SimServer) -> None:
    client = await sim.session()
    assert await _failed(client, "register dbevent nope") == ("E_PS0D3B", "42505", 0x50D3B)
    result = await client.query("register dbevent nope")
    assert result.errors[0].message == "REGISTER DBEVENT: Dbevent 'nope' does not exist."
    assert await _failed(client, "raise dbevent nope") == ("E_PS0D3B", "42505", 0x50D3B)
    assert await _failed(client, "remove dbevent nope") == ("E_PS0D3B", "42505", 0x50D3B)
    assert await _failed(client, "drop dbevent nope") == ("E_QE020B", "42505", 0x6020B)
    await client.ok("create dbevent ev")
    assert await _failed(client, "create dbevent ev") == ("E_QE020A", "42502", 0x6020A)
    await client.close()


async def test_share_reaches_all_noshare_only_the_raiser(sim: SimServer) -> None:
    a = await sim.session()
    b = await sim.session()
    await a.ok("create dbevent ev")
    await a.ok("register dbevent ev")
    await b.ok("register dbevent ev")
    await a.ok("raise dbevent ev 'shared'")
    await a.ok("raise dbevent ev 'mine' with noshare")
    await b.ok("raise dbevent ev 'explicit' with share")
    a_texts = [
        e.text for e in [await a.next_event(), await a.next_event(), await a.next_event()] if e
    ]
    assert a_texts == [b"shared", b"mine", b"explicit"]
    b_texts = [e.text for e in [await b.next_event(), await b.next_event()] if e]
    assert b_texts == [b"shared", b"explicit"]
    assert await b.next_event(0.2) is None
    await a.close()
    await b.close()


async def test_noshare_from_an_unregistered_session_reaches_nobody(sim: SimServer) -> None:
    listener = await sim.session()
    raiser = await sim.session()
    await listener.ok("create dbevent ev")
    await listener.ok("register dbevent ev")
    await raiser.ok("raise dbevent ev 'x' with noshare")
    assert await listener.next_event(0.2) is None
    assert sim.stats()["events_delivered"] == 0
    await listener.close()
    await raiser.close()


@pytest.mark.parametrize(
    ("sent", "received"),
    [
        (b"", None),
        (b"a", b"a"),
        (b"b" * 255, b"b" * 255),
        (b"c" * 256, b"c" * 256),
        (b"d" * 300, b"d" * 256),
        (b"caf\xc3\xa9 \xff\xfe raw", b"caf\xc3\xa9 \xff\xfe raw"),
        (b"it''s", b"it's"),
    ],
)
async def test_event_text(sim: SimServer, sent: bytes, received: bytes | None) -> None:
    client = await sim.session()
    await client.ok("create dbevent ev")
    await client.ok("register dbevent ev")
    await client.ok(b"raise dbevent ev '" + sent + b"'")
    event = await client.next_event()
    assert event is not None
    assert event.text == received
    await client.close()


async def test_raise_without_text_has_no_text(sim: SimServer) -> None:
    client = await sim.session()
    await client.ok("create dbevent ev")
    await client.ok("register dbevent ev")
    await client.ok("raise dbevent ev")
    event = await client.next_event()
    assert event is not None
    assert event.text is None
    await client.close()


async def test_event_time_is_now_in_gmt(sim: SimServer) -> None:
    client = await sim.session()
    await client.ok("create dbevent ev")
    await client.ok("register dbevent ev")
    before = int(time.time())
    await client.ok("raise dbevent ev")
    after = time.time()
    event = await client.next_event()
    assert event is not None
    assert event.time_raw[0] == 0x3D  # absolute, year, month, day and time given
    assert datetime.fromtimestamp(before, UTC) <= event.time <= datetime.fromtimestamp(after, UTC)
    await client.close()


async def test_unqualified_names_resolve_to_own_then_dba(sim: SimServer) -> None:
    dba = await sim.session("ingres")
    bob = await sim.session("bob")
    await dba.ok("create dbevent ev")
    await dba.ok("grant register, raise on dbevent ev to public")
    await bob.ok("register dbevent ev")  # bob has none: the DBA's
    await bob.ok("create dbevent ev")  # now bob owns one of that name
    await bob.ok("register dbevent ev")  # his own, a different event
    await bob.ok("raise dbevent ev 'own'")
    await dba.ok("raise dbevent ev 'dba'")
    first, second = await bob.next_event(), await bob.next_event()
    assert first is not None
    assert second is not None
    assert [(first.owner, first.text), (second.owner, second.text)] == [
        ("bob", b"own"),
        ("ingres", b"dba"),
    ]
    await dba.close()
    await bob.close()


async def test_owner_is_the_creator_not_the_raiser(sim: SimServer) -> None:
    alice = await sim.session("alice")
    bob = await sim.session("bob")
    await alice.ok("create dbevent ev")
    await alice.ok("grant raise on dbevent ev to bob")
    await alice.ok("register dbevent ev")
    await bob.ok("raise dbevent alice.ev")
    event = await alice.next_event()
    assert event is not None
    assert event.owner == "alice"
    await alice.close()
    await bob.close()


async def test_privileges_need_a_grant(sim: SimServer) -> None:
    alice = await sim.session("alice")
    bob = await sim.session("bob")
    carol = await sim.session("carol")
    await alice.ok("create dbevent ev")
    assert await _failed(bob, "register dbevent alice.ev") == ("E_PS0D3C", "42503", 0x50D3C)
    assert await _failed(bob, "raise dbevent alice.ev") == ("E_PS0D3C", "42503", 0x50D3C)
    await alice.ok("grant register on dbevent ev to bob")
    await bob.ok("register dbevent alice.ev")
    result = await bob.query("raise dbevent alice.ev")
    assert result.errors[0].message == ("RAISE: you lack 'RAISE' on dbevent 'ev' owned by 'alice'.")
    assert await _failed(carol, "register dbevent alice.ev") == ("E_PS0D3C", "42503", 0x50D3C)
    await bob.ok("remove dbevent alice.ev")  # removing needs no privilege
    await alice.ok("grant all on dbevent ev to public")
    await carol.ok("register dbevent alice.ev")
    await carol.ok("raise dbevent alice.ev")
    for client in (alice, bob, carol):
        await client.close()


async def test_only_the_owner_grants(sim: SimServer) -> None:
    alice = await sim.session("alice")
    bob = await sim.session("bob")
    carol = await sim.session("carol")
    await alice.ok("create dbevent ev")
    await alice.ok("grant register on dbevent ev to bob")
    # bob holds a privilege, without grant option
    assert await _failed(bob, "grant raise on dbevent alice.ev to carol") == (
        "E_PS0551",
        "01007",
        0x50551,
    )
    assert await _failed(bob, "grant all on dbevent alice.ev to carol") == (
        "E_PS0563",
        "01007",
        0x50563,
    )
    # carol holds none: the event is not even admitted to exist
    result = await carol.query("grant register on dbevent alice.ev to carol")
    err = result.errors[0]
    assert (err.sqlstate, err.code) == ("42000", 0x88F)
    assert err.message.startswith("GRANT: Schema 'alice' does not contain  \ndbevent 'ev'")
    assert await _failed(alice, "grant select on dbevent ev to bob") == (
        "E_PS0D35",
        "42000",
        0x50D35,
    )
    for client in (alice, bob, carol):
        await client.close()


async def test_qualified_names_stay_in_their_schema(sim: SimServer) -> None:
    alice = await sim.session("alice")
    bob = await sim.session("bob")
    await alice.ok("create dbevent ev")
    assert await _failed(bob, "create dbevent alice.other") == ("E_PS0421", "42503", 0x50421)
    result = await bob.query("register dbevent bob.ev")  # bob has none; no fallback
    err = result.errors[0]
    assert (err.sqlstate, err.code) == ("42000", 0x88F)
    assert err.message == (
        "REGISTER DBEVENT: Schema 'bob' does not contain  \ndbevent 'ev' or you lack "
        "privileges on that dbevent \nwhich are required in order to execute this statement."
    )
    await alice.close()
    await bob.close()


async def test_only_the_owner_drops(sim: SimServer) -> None:
    alice = await sim.session("alice")
    bob = await sim.session("bob")
    await alice.ok("create dbevent ev")
    assert await _failed(bob, "drop dbevent alice.ev") == ("E_PS0420", "42503", 0x50420)
    assert await _failed(bob, "drop dbevent ev") == ("E_QE020B", "42505", 0x6020B)
    await alice.ok("drop dbevent ev")
    assert sim.stats()["dbevents"] == []
    await alice.close()
    await bob.close()


async def test_drop_keeps_registrations(sim: SimServer) -> None:
    client = await sim.session()
    await client.ok("create dbevent ev")
    await client.ok("register dbevent ev")
    await client.ok("drop dbevent ev")
    assert await _failed(client, "raise dbevent ev") == ("E_PS0D3B", "42505", 0x50D3B)
    await client.ok("create dbevent ev")
    await client.ok("raise dbevent ev 'again'")
    event = await client.next_event()
    assert event is not None
    assert event.text == b"again"
    await client.close()


async def test_identifiers_fold_unless_delimited(sim: SimServer) -> None:
    client = await sim.session()
    await client.ok("CREATE DBEVENT MyEvent")
    await client.ok('Create DbEvent "MyEvent"')
    await client.ok("REGISTER DBEVENT myevent")
    await client.ok('register dbevent "MyEvent";')
    await client.ok("RAISE DBEVENT MYEVENT 'lower'")
    await client.ok("raise dbevent \"MyEvent\" 'delimited' WITH SHARE")
    first, second = await client.next_event(), await client.next_event()
    assert first is not None
    assert second is not None
    assert [(first.name, first.text), (second.name, second.text)] == [
        ("myevent", b"lower"),
        ("MyEvent", b"delimited"),
    ]
    assert await _failed(client, 'register dbevent "myEvent"') == ("E_PS0D3B", "42505", 0x50D3B)
    await client.close()


async def test_events_are_not_durable(sim: SimServer) -> None:
    raiser = await sim.session()
    await raiser.ok("create dbevent ev")
    await raiser.ok("raise dbevent ev 'before anyone listened'")
    late = await sim.session()
    await late.ok("register dbevent ev")
    await raiser.ok("raise dbevent ev 'after'")
    event = await late.next_event()
    assert event is not None
    assert event.text == b"after"
    await late.close()  # its registration and queue go with it
    assert await eventually(lambda: sim.stats()["sessions"] == 1, 5)
    again = await sim.session()
    await raiser.ok("raise dbevent ev 'nobody'")
    assert await again.next_event(0.2) is None
    assert sim.stats()["events_delivered"] == 1
    await raiser.close()
    await again.close()


async def test_rollback_keeps_registrations_and_raised_events(sim: SimServer) -> None:
    client = await sim.session()
    await client.ok("set autocommit off")
    await client.ok("create dbevent ev")
    await client.ok("register dbevent ev")
    await client.ok("raise dbevent ev 'kept'")
    await client.ok("rollback")
    await client.ok("raise dbevent ev 'still registered'")
    await client.ok("commit work")
    texts = [(await client.next_event()), (await client.next_event())]
    assert [e.text for e in texts if e] == [b"kept", b"still registered"]
    await client.close()


async def test_events_are_fifo_per_session(sim: SimServer) -> None:
    listener = await sim.session()
    raiser = await sim.session()
    await raiser.ok("create dbevent ev")
    await listener.ok("register dbevent ev")
    for i in range(200):
        await raiser.ok(f"raise dbevent ev '{i}'")
    got = [await listener.next_event() for _ in range(200)]
    assert [e.text for e in got if e] == [str(i).encode() for i in range(200)]
    await listener.close()
    await raiser.close()


async def test_events_arrive_between_query_responses(sim: SimServer) -> None:
    listener = await sim.session()
    raiser = await sim.session()
    await raiser.ok("create dbevent ev")
    await listener.ok("register dbevent ev")
    await raiser.ok("raise dbevent ev 'during'")
    result = await listener.ok("select 1")  # the event frame is read on the way
    assert result.rows == [[b"\x01\x00"]]  # INTEGER2
    assert [e.text for e in listener.events] == [b"during"]
    await listener.close()
    await raiser.close()


async def test_databases_are_separate(sim: SimServer) -> None:
    a = await sim.session(database="db1")
    b = await sim.session(database="db2")
    await a.ok("create dbevent ev")
    await b.ok("create dbevent ev")
    await a.ok("register dbevent ev")
    await b.ok("register dbevent ev")
    await b.ok("raise dbevent ev")
    event = await b.next_event()
    assert event is not None
    assert event.database == "db2"
    assert await a.next_event(0.2) is None
    await a.close()
    await b.close()


async def test_select_dbmsinfo(sim: SimServer) -> None:
    client = await sim.session("alice", "salesdb")
    values = {}
    for name in ("_version", "database", "username", "dba", "session_id", "_bintim", "nosuch"):
        result = await client.ok(f"select dbmsinfo('{name}')")
        assert result.columns[0].datatype == 21  # IIAPI_VCH_TYPE
        values[name] = result.rows[0][0]
    assert values["database"] == b"salesdb"
    assert values["username"] == b"alice"
    assert values["dba"] == b"ingres"
    assert values["nosuch"] == b""
    assert values["_version"]
    assert values["session_id"]
    assert abs(int(values["_bintim"] or b"0") - time.time()) < 60
    await client.close()


@pytest.mark.parametrize(
    ("sql", "symbol"),
    [
        ("selec 1", "selec"),
        ("create table t", "table"),
        ("register dbevent", "dbevent"),
        ("raise dbevent ev 'x' extra", "extra"),
        ("commit; commit", "commit"),
    ],
)
async def test_syntax_errors(sim: SimServer, sql: str, symbol: str) -> None:
    client = await sim.session()
    result = await client.query(sql)
    assert not result.ok
    err = result.errors[0]
    assert (err.sqlstate, err.code) == ("42000", 0x9C4)
    assert err.message == f"Syntax error on line 1.  Last symbol read was: '{symbol}'."
    await client.close()


async def test_raise_with_bad_clause_or_bare_text(sim: SimServer) -> None:
    client = await sim.session()
    await client.ok("create dbevent ev")
    assert await _failed(client, "raise dbevent ev 'x' with other") == (
        "E_PS0D38",
        "42000",
        0x50D38,
    )
    assert await _failed(client, "raise dbevent ev sometext") == ("E_PS0D36", "42000", 0x50D36)
    await client.close()


async def test_passwords_enforced_when_configured() -> None:
    async with SimServer(users={"alice": "secret"}) as sim:
        ok = await SimClient.connect("127.0.0.1", sim.port, "alice", "secret", "demodb")
        await ok.close()
        for user, password in (("alice", "wrong"), ("mallory", "secret")):
            with pytest.raises(SessionRefusedError) as caught:
                await SimClient.connect("127.0.0.1", sim.port, user, password, "demodb")
            err = caught.value.errors[0]
            assert (err.sqlstate, err.code) == ("50000", 0xC000B)
        assert sim.stats()["sessions"] == 0


async def test_unknown_database_refused() -> None:
    async with SimServer(databases=["demodb"]) as sim:
        with pytest.raises(SessionRefusedError) as caught:
            await sim.session(database="nodb")
        err = caught.value.errors[0]
        assert (err.sqlstate, err.code) == ("08004", 0x10)
        assert "nodb" in err.message
        client = await sim.session(database="demodb")
        await client.close()


async def test_in_process_helpers(sim: SimServer) -> None:
    sim.create_event("ingres", "ev")
    client = await sim.session()
    await client.ok("register dbevent ev")
    assert sim.raise_event("ingres", "ev", b"from the test") == 1
    assert sim.raise_event("ingres", "ev", b"noshare", share=False) == 0
    event = await client.next_event()
    assert event is not None
    assert event.text == b"from the test"
    assert await client.next_event(0.2) is None
    await client.close()


@pytest.mark.parametrize(
    ("literal", "length", "value"),
    [
        ("1", 2, b"\x01\x00"),  # what the real server answers to SELECT 1 (issue 9)
        ("32767", 2, b"\xff\x7f"),
        ("32768", 4, b"\x00\x80\x00\x00"),
        ("4294967296", 8, b"\x00\x00\x00\x00\x01\x00\x00\x00"),
    ],
)
async def test_select_integer_is_the_smallest_integer_type(
    sim: SimServer, literal: str, length: int, value: bytes
) -> None:
    client = await sim.session()
    result = await client.ok(f"select {literal}")
    assert [(c.datatype, c.length, c.nullable) for c in result.columns] == [(30, length, False)]
    assert result.rows == [[value]]
    assert (await client.query(f"select {1 << 63}")).errors[0].code == 0x9C4  # a DECIMAL
    await client.close()


async def test_names_reach_the_client_cut_at_the_first_blank(sim: SimServer) -> None:
    """scenotify.c sends name, owner and database up to their first blank."""
    client = await sim.session(user="bob smith", database="demo db")
    await client.ok('create dbevent "two words"')
    await client.ok('register dbevent "two words"')
    await client.ok("raise dbevent \"two words\" 'x' with noshare")
    event = await client.next_event()
    assert event is not None
    assert (event.name, event.owner, event.database) == ("two", "bob", "demo")
    await client.close()


async def test_share_event_comes_after_the_raise_reply_noshare_before(sim: SimServer) -> None:
    """SHARE goes through the event thread (sce.c); NOSHARE is queued to the raiser at once."""
    client = await sim.session()
    await client.ok("create dbevent ev")
    await client.ok("register dbevent ev")
    await client.ok("raise dbevent ev 'private' with noshare")
    assert [e.text for e in client.events] == [b"private"]  # read before the DONE
    client.events.clear()
    await client.ok("raise dbevent ev 'shared' with share")
    assert client.events == []  # not before the reply ...
    event = await client.next_event()  # ... but after it, the raiser included
    assert event is not None
    assert event.text == b"shared"
    await client.close()


async def test_delay_holds_share_events_only(sim: SimServer) -> None:
    listener = await sim.session()
    raiser = await sim.session()
    await listener.ok("create dbevent ev")
    await listener.ok("register dbevent ev")
    await raiser.ok("register dbevent ev")
    sim.set_delay(300)
    started = time.monotonic()
    await raiser.ok("raise dbevent ev 'shared'")
    await raiser.ok("raise dbevent ev 'mine' with noshare")
    assert [e.text for e in raiser.events] == [b"mine"]  # NOSHARE: not the event thread's
    shared = await listener.next_event()
    assert shared is not None
    assert shared.text == b"shared"
    assert time.monotonic() - started >= 0.3
    sim.set_delay(0)
    await listener.close()
    await raiser.close()


async def test_events_are_stamped_with_the_dbms_clock(sim: SimServer) -> None:
    client = await sim.session()
    await client.ok("create dbevent ev")
    await client.ok("register dbevent ev")
    sim.set_clock_offset(-3600.0)  # the DBMS clock runs an hour behind the host's
    await client.ok("raise dbevent ev")
    event = await client.next_event()
    assert event is not None
    assert abs(event.time.timestamp() - (time.time() - 3600.0)) < 5
    bintim = (await client.ok("select dbmsinfo('_bintim')")).rows[0][0]
    assert bintim is not None
    assert abs(int(bintim) - (time.time() - 3600.0)) < 5
    assert sim.stats()["clock_offset"] == -3600.0
    await client.close()
