"""The durable spool: exact round trip, order, deletes, reopening, migration, bad files, kill -9."""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.event import CaughtEvent, GapMarker, Item
from bridge.spool import SCHEMA_VERSION, Spool, SpoolError, item_size, read_stats

T0 = datetime(2024, 5, 17, 12, 34, 56, 789012, tzinfo=UTC)


def make_event(i: int, text: bytes | None = b"payload") -> CaughtEvent:
    return CaughtEvent(
        database="sales", owner="ingres", name=f"ev_{i % 7}",
        raised_at=T0 + timedelta(microseconds=i), text=text, message_id=f"id-{i:06d}",
    )


def make_gap(i: int, reason: str = "ingres connection lost") -> GapMarker:
    return GapMarker("sales", T0 + timedelta(seconds=i), T0 + timedelta(seconds=i + 5), reason,
                     message_id=f"gap-{i:06d}")


def events_of(rows: list[tuple[int, Item]]) -> list[CaughtEvent]:
    """The items read back, every one of them an event."""
    events = [item for _, item in rows if isinstance(item, CaughtEvent)]
    assert len(events) == len(rows)
    return events


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    opened = Spool.open(tmp_path / "spool.sqlite")
    yield opened
    opened.close()


def test_every_field_round_trips_exactly(tmp_path: Path) -> None:
    texts: list[bytes | None] = [None, b"", bytes(range(256)), b"\xff\xfe\x80 not utf-8", b"a"]
    events = [make_event(i, text) for i, text in enumerate(texts)]
    events.append(CaughtEvent(
        database="db\u00e9", owner="\u00f6wner", name="n",
        raised_at=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), text=b"x",
    ))
    path = tmp_path / "spool.sqlite"
    spool = Spool.open(path)
    spool.append(events)
    spool.close()

    spool = Spool.open(path)
    back = events_of(spool.read(0, 100))
    spool.close()
    assert back == events  # dataclass equality: every field
    assert [e.text for e in back] == [*texts, b"x"]
    assert back[1].text == b""
    assert back[0].text is None
    assert all(e.raised_at.tzinfo is not None for e in back)


def test_other_time_zones_keep_the_instant(spool: Spool) -> None:
    plus_two = timezone(timedelta(hours=2))
    event = CaughtEvent("d", "o", "n", datetime(2024, 1, 1, 14, 0, 0, 1, tzinfo=plus_two), None)
    spool.append([event])
    (back,) = events_of(spool.read(0, 1))
    assert back.raised_at == datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=UTC)
    assert back.raised_at.utcoffset() == timedelta(0)


def test_read_pages_in_append_order(spool: Spool) -> None:
    events = [make_event(i) for i in range(50)]
    spool.append(events[:1])
    spool.append(events[1:30])
    spool.append(events[30:])
    got: list[Item] = []
    after = 0
    while page := spool.read(after, 7):
        seqs = [seq for seq, _ in page]
        assert seqs == sorted(seqs)
        assert seqs[0] > after
        after = seqs[-1]
        got.extend(event for _, event in page)
    assert got == events
    assert spool.last_seq == after == 50


def test_gap_markers_round_trip_in_one_order_with_events(tmp_path: Path) -> None:
    marker = GapMarker("db\u00e9", datetime(1999, 12, 31, 23, 59, 58, 1, tzinfo=UTC),
                       datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC), "n\u00e4me: E_LC0001 lost")
    items: list[Item] = [make_event(0), marker, make_event(1), make_gap(2), make_event(2)]
    path = tmp_path / "spool.sqlite"
    spool = Spool.open(path)
    spool.append(items)
    assert (spool.depth, spool.gap_markers) == (5, 2)
    assert spool.bytes == sum(map(item_size, items))
    spool.close()

    spool = Spool.open(path)
    assert (spool.depth, spool.gap_markers, spool.bytes) == (5, 2, sum(map(item_size, items)))
    assert [item for _, item in spool.read(0, 100)] == items  # every field, the kind kept
    spool.delete([marker.message_id, "gap-000002"])
    assert (spool.depth, spool.gap_markers) == (3, 0)
    assert spool.bytes == sum(map(item_size, items[::2]))
    spool.close()


def test_a_gap_marker_counts_its_reason_and_window_against_the_limit() -> None:
    short, long = make_gap(0, "x"), make_gap(0, "x" * 101)
    assert item_size(long) - item_size(short) == 100
    assert item_size(short) > len(short.message_id) + len(short.database)


def test_meta_commits_with_the_items_or_not_at_all(spool: Spool) -> None:
    spool.append([make_event(1)], {"session_alive_at": "1"})
    assert spool.get_meta("session_alive_at") == "1"
    spool.append([], {"session_alive_at": "2"})  # the meta alone is a transaction too
    assert spool.get_meta("session_alive_at") == "2"
    with pytest.raises(SpoolError, match="message_id"):
        spool.append([make_gap(3), make_event(1)], {"session_alive_at": "3"})
    assert spool.get_meta("session_alive_at") == "2"
    assert (spool.depth, spool.gap_markers, spool.last_seq) == (1, 0, 1)


def test_delete_and_accounting(spool: Spool) -> None:
    events = [make_event(i) for i in range(10)]
    spool.append(events)
    assert spool.depth == 10
    assert spool.bytes == sum(item_size(e) for e in events)

    spool.delete([e.message_id for e in events[:4]] + ["unknown-id"])
    assert spool.depth == 6
    assert spool.bytes == sum(item_size(e) for e in events[4:])
    assert [e for _, e in spool.read(0, 100)] == events[4:]
    spool.delete([])
    spool.delete([e.message_id for e in events[4:]])
    assert (spool.depth, spool.bytes) == (0, 0)


def test_large_delete_spans_chunks(spool: Spool) -> None:
    events = [make_event(i) for i in range(1200)]
    spool.append(events)
    spool.delete([e.message_id for e in events[:1100]])
    assert spool.depth == 100
    assert [e for _, e in spool.read(0, 1000)] == events[1100:]


def test_reopen_keeps_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "spool.sqlite"  # parents are created
    events = [make_event(i) for i in range(20)]
    spool = Spool.open(path)
    spool.append(events)
    spool.delete([e.message_id for e in events[::2]])
    depth, size = spool.depth, spool.bytes
    spool.append([], {"last_session_ok": "2024-05-17T12:00:00.000001+00:00"})
    spool.close()

    spool = Spool.open(path)
    assert (spool.depth, spool.bytes) == (depth, size) == (10, sum(map(item_size, events[1::2])))
    assert [e for _, e in spool.read(0, 100)] == events[1::2]
    assert spool.get_meta("last_session_ok") == "2024-05-17T12:00:00.000001+00:00"
    assert spool.get_meta("never_set") is None
    spool.delete([e.message_id for e in events])
    spool.close()

    # An emptied spool never reuses seqs: "read after N" stays meaningful.
    spool = Spool.open(path)
    assert spool.depth == 0
    assert spool.last_seq == 20
    spool.append([make_event(99)])
    assert [seq for seq, _ in spool.read(0, 10)] == [21]
    spool.close()


def test_meta_overwrites(spool: Spool) -> None:
    spool.append([], {"k": "1"})  # metadata on its own: a transaction without items
    spool.append([make_event(1)], {"k": "2"})
    assert spool.get_meta("k") == "2"


def test_duplicate_message_id_stores_nothing_of_the_batch(spool: Spool) -> None:
    spool.append([make_event(1)])
    with pytest.raises(SpoolError, match="message_id"):
        spool.append([make_event(2), make_event(1)])
    assert spool.depth == 1
    assert spool.last_seq == 1
    assert [e.message_id for _, e in spool.read(0, 10)] == ["id-000001"]
    spool.append([make_event(2)])  # The failed transaction left the spool usable.
    assert spool.last_seq == 2


def test_garbage_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    garbage = bytes(random.Random(7).randrange(256) for _ in range(8192))
    path.write_bytes(garbage)
    with pytest.raises(SpoolError, match="not a spool") as info:
        Spool.open(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.sqlite"]


def test_damaged_spool_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool.open(path)
    spool.append([make_event(i, bytes(200)) for i in range(500)])
    spool.close()
    data = bytearray(path.read_bytes())
    data[4096 * 2: 4096 * 6] = b"\xa5" * (4096 * 4)  # Trash pages 3..6 (btree pages).
    path.write_bytes(bytes(data))
    with pytest.raises(SpoolError, match="damaged") as info:
        Spool.open(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == bytes(data)


def test_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SpoolError, match="not a dbevent-bridge spool"):
        Spool.open(path)
    assert path.read_bytes() == before  # Not even switched to WAL.


def test_empty_file_becomes_a_spool(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    path.touch()
    spool = Spool.open(path)
    spool.append([make_event(1)])
    assert spool.depth == 1
    spool.close()


def test_directory_at_the_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    path.mkdir()
    with pytest.raises(SpoolError, match="is a directory"):
        Spool.open(path)
    assert path.is_dir()
    assert not any(path.iterdir())


def test_path_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    with pytest.raises(SpoolError, match="cannot create the directory"):
        Spool.open(blocker / "sub" / "spool.sqlite")
    assert blocker.read_text() == "keep me"


def test_second_opener_is_refused_while_held(spool: Spool) -> None:
    spool.append([make_event(1)])
    with pytest.raises(SpoolError, match="in use by another process"):
        Spool.open(spool.path)
    assert spool.depth == 1
    spool.append([make_event(2)])  # The holder is unaffected.


def test_second_process_is_refused_while_held(spool: Spool) -> None:
    code = (
        "import sys\nfrom pathlib import Path\nfrom bridge.spool import Spool, SpoolError\n"
        "try:\n    Spool.open(Path(sys.argv[1]))\nexcept SpoolError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(spool.path)],
                            capture_output=True, text=True, timeout=60, check=True)
    assert "in use by another process" in result.stdout


def test_closed_spool_refuses_writes(spool: Spool) -> None:
    spool.close()
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append([make_event(1)])


# --- kill -9 --------------------------------------------------------------------------

# The child runs a deterministic sequence of transactions (seeded), printing
# "<n>" after the n-th transaction committed. Every third transaction deletes
# the oldest batch still held, so deletes are crash-tested too; every other
# batch carries a gap marker, and each append records its number in the meta.
_CHILD = """
import sys
from pathlib import Path
from bridge.spool import Spool
from tests.test_spool import transactions
spool = Spool.open(Path(sys.argv[1]))
for n, (kind, events) in enumerate(transactions(int(sys.argv[2])), 1):
    if kind == "append":
        spool.append(events, {"appended": str(n)})
    else:
        spool.delete([e.message_id for e in events])
    sys.stdout.write(f"{n}\\n")
    sys.stdout.flush()
"""


def transactions(seed: int) -> Iterator[tuple[str, list[Item]]]:
    """The child's endless, reproducible stream of appends and deletes."""
    rng = random.Random(seed)
    held: list[list[Item]] = []
    batch_no = 0
    while True:
        if batch_no % 3 == 2 and held:
            yield "delete", held.pop(0)
        size = rng.randint(1, 64)
        batch: list[Item] = [
            CaughtEvent("db", "owner", f"ev{batch_no}",
                        T0 + timedelta(microseconds=batch_no * 1000 + i),
                        rng.randbytes(rng.randint(0, 256)), message_id=f"{batch_no}:{i}")
            for i in range(size)
        ]
        if batch_no % 2:
            batch.insert(rng.randint(0, size), GapMarker(
                "db", T0, T0 + timedelta(seconds=batch_no), f"lost {batch_no}",
                message_id=f"{batch_no}:gap"))
        held.append(batch)
        batch_no += 1
        yield "append", batch


def state_after(seed: int, count: int) -> tuple[list[Item], str | None]:
    """What the spool holds after the first `count` transactions, in order, and its meta."""
    held: list[Item] = []
    appended = None
    stream = transactions(seed)
    for n in range(1, count + 1):
        kind, events = next(stream)
        if kind == "append":
            held.extend(events)
            appended = str(n)
        else:
            gone = {e.message_id for e in events}
            held = [e for e in held if e.message_id not in gone]
    return held, appended


def run_and_kill(path: Path, seed: int) -> int:
    """Run the child, SIGKILL it at a random moment; the number of commits it reported."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(seed)],
        stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent,
    )
    assert child.stdout is not None
    first = child.stdout.readline()  # The child is up and committing.
    assert first == b"1\n"
    time.sleep(random.Random(seed).uniform(0.0, 0.3))
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    lines = (first + rest).split(b"\n")[:-1]  # Only complete lines count.
    return int(lines[-1])


def check_kill(tmp_path: Path, seed: int) -> None:
    path = tmp_path / f"killed-{seed}.sqlite"
    reported = run_and_kill(path, seed)
    spool = Spool.open(path)
    held = [item for _, item in spool.read(0, 1_000_000)]
    markers = sum(isinstance(item, GapMarker) for item in held)
    assert (spool.depth, spool.bytes) == (len(held), sum(map(item_size, held)))
    assert spool.gap_markers == markers
    state = (held, spool.get_meta("appended"))
    spool.close()
    # Every reported commit is there; at most one more committed before its report;
    # the meta is always that of the last append committed, never ahead or behind.
    candidates = [state_after(seed, reported), state_after(seed, reported + 1)]
    assert state in candidates, f"seed {seed}: after {reported} commits, spool holds {len(held)}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_leaves_exactly_the_committed_prefix(tmp_path: Path, seed: int) -> None:
    check_kill(tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 125))
def test_kill_9_many_times(tmp_path: Path, seed: int) -> None:
    check_kill(tmp_path, seed)


# --- privacy: event texts are business data ----------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_spool_files_are_private_to_the_owner(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask, which would give 0644 files
    try:
        spool = Spool.open(tmp_path / "state" / "spool.sqlite")
    finally:
        os.umask(old_umask)
    try:
        spool.append([make_event(i) for i in range(10)])
        files = [spool.path, spool.path.with_name("spool.sqlite-wal"),
                 spool.path.with_name("spool.sqlite-shm")]
        assert {file.name: _mode(file) for file in files} == {file.name: 0o600 for file in files}
        assert _mode(spool.path.parent) == 0o700
    finally:
        spool.close()


def test_spool_readable_by_others_is_reported_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.sqlite"
    Spool.open(path).close()
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="bridge.spool"):
        Spool.open(path).close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    files = [path, path.with_name("spool.sqlite-wal"), path.with_name("spool.sqlite-shm")]
    assert warnings == [
        f"the spool {path} is readable by other users (spool.sqlite 0644, spool.sqlite-wal "
        f"0644, spool.sqlite-shm 0644) and holds event texts; restrict it: chmod 600 "
        + " ".join(map(str, files))
    ]


def test_private_spool_is_not_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spool.sqlite"
    Spool.open(path).close()
    with caplog.at_level(logging.WARNING, logger="bridge.spool"):
        Spool.open(path).close()
    assert caplog.records == []


# --- stats ----------------------------------------------------------------------------------


def test_stats_read_while_the_spool_is_held(spool: Spool) -> None:
    events = [make_event(i, b"x" * i) for i in range(5, 0, -1)]
    spool.append(events)
    spool.delete([events[0].message_id])  # the oldest raise time goes with it (i=5 is newest)
    stats = read_stats(spool.path)
    assert stats.events == 4 == spool.depth
    assert stats.gap_markers == 0
    assert stats.event_bytes == spool.bytes == sum(item_size(e) for e in events[1:])
    assert stats.oldest_raised_at == min(e.raised_at for e in events[1:])
    assert stats.file_bytes > 0
    spool.append([make_event(99)])  # the holder is unaffected by the reader
    assert read_stats(spool.path).events == 5


def test_stats_count_gap_markers_apart(spool: Spool) -> None:
    old = make_gap(-3600)  # its window is older than any event: not a raise time
    items: list[Item] = [make_event(3), old, make_event(1)]
    spool.append(items)
    stats = read_stats(spool.path)
    assert (stats.events, stats.gap_markers) == (2, 1)
    assert stats.event_bytes == spool.bytes == sum(map(item_size, items))
    assert stats.oldest_raised_at == make_event(1).raised_at


def test_stats_of_an_empty_spool(spool: Spool) -> None:
    stats = read_stats(spool.path)
    assert (stats.events, stats.gap_markers, stats.event_bytes, stats.oldest_raised_at) == (
        0, 0, 0, None)


def test_stats_without_a_spool(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match="there is no spool at"):
        read_stats(tmp_path / "missing.sqlite")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(SpoolError, match="not a dbevent-bridge spool"):
        read_stats(other)


# --- schema versions ------------------------------------------------------------------------

# Version 1, exactly as the release before gap markers created it (bridge/spool.py).
_V1_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ("CREATE TABLE events ("
     " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
     " message_id TEXT NOT NULL UNIQUE,"
     " database TEXT NOT NULL,"
     " owner TEXT NOT NULL,"
     " name TEXT NOT NULL,"
     " raised_at INTEGER NOT NULL,"
     " text BLOB,"
     " size INTEGER NOT NULL)"),
    "PRAGMA application_id = 1145193794",
    "PRAGMA user_version = 1",
)
_V1_INSERT = (
    "INSERT INTO events (seq, message_id, database, owner, name, raised_at, text, size)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def write_v1_spool(path: Path, events: list[CaughtEvent], meta: dict[str, str],
                   deleted: int = 0) -> None:
    """A spool as the version-1 release left it: `events` after `deleted` confirmed ones."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in _V1_SCHEMA:
            conn.execute(statement)
        for seq, event in enumerate(events, deleted + 1):
            micros = (event.raised_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
                microseconds=1)
            conn.execute(_V1_INSERT, (seq, event.message_id, event.database, event.owner,
                                      event.name, micros, event.text, item_size(event)))
        if deleted:  # what was confirmed and deleted left its high-water mark behind
            conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'",
                         (deleted + len(events),))
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
    finally:
        conn.close()
    path.chmod(0o600)


def _columns(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA table_info(items)").fetchall()
    finally:
        conn.close()


def test_a_version_1_spool_is_migrated_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "v1.sqlite"
    events = [make_event(i, None if i == 2 else b"\xffx") for i in range(5)]
    write_v1_spool(path, events, {"session_alive_at": "2024-05-17T12:00:00+00:00"}, deleted=7)
    assert read_stats(path).events == 5  # stats read it as it is, before any migration

    with caplog.at_level(logging.INFO, logger="bridge.spool"):
        spool = Spool.open(path)
    assert "migrating the spool" in caplog.text
    try:
        assert [(seq, item) for seq, item in spool.read(0, 100)] == list(
            enumerate(events, 8))  # seqs and message ids kept
        assert (spool.depth, spool.gap_markers) == (5, 0)
        assert spool.bytes == sum(map(item_size, events))
        assert spool.get_meta("session_alive_at") == "2024-05-17T12:00:00+00:00"
        assert spool.last_seq == 12
        spool.append([make_gap(9)])
        assert spool.last_seq == 13  # the high-water mark survived the rename
    finally:
        spool.close()
    fresh = tmp_path / "fresh.sqlite"
    Spool.open(fresh).close()
    assert _columns(path) == _columns(fresh)  # one schema, whichever way a file came to it
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    conn.close()
    stats = read_stats(path)
    assert (stats.events, stats.gap_markers) == (5, 1)


def test_a_spool_of_a_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    Spool.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SpoolError, match="schema version 3, this bridge reads versions up to 2"):
        Spool.open(path)
    assert path.read_bytes() == before
