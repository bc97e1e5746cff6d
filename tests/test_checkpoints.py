"""WAL checkpoints on their own thread: the WAL reaches the database file, and restarts."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.checkpoints import Checkpointer
from tests.polling import eventually

PAGE = 4096


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A WAL database whose writing connection never checkpoints itself (as the spool's)."""
    conn = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (x BLOB)")
    yield conn
    conn.close()


def commit(conn: sqlite3.Connection, checkpointer: Checkpointer, rows: int = 1) -> None:
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 1000,) for _ in range(rows)])
    conn.execute("COMMIT")
    checkpointer.written()


def wal_salt(path: Path) -> bytes:
    """The WAL header's salts: SQLite changes them each time it restarts the WAL."""
    with (path.parent / (path.name + "-wal")).open("rb") as wal:
        return wal.read(32)[16:24]


async def test_commits_reach_the_database_file(writer: sqlite3.Connection, tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    checkpointer = Checkpointer(path, interval=0.01, batch=1)
    try:
        before = path.stat().st_size
        for _ in range(50):
            commit(writer, checkpointer, rows=10)
        # Only the checkpointer copies pages into the file: the writer never does.
        assert await eventually(lambda: path.stat().st_size >= before + 100 * PAGE, 30)
    finally:
        checkpointer.close()


async def test_wal_restarts_under_a_steady_stream(writer: sqlite3.Connection,
                                                  tmp_path: Path) -> None:
    """Commits never pause, yet the WAL is reused from its start rather than growing."""
    path = tmp_path / "db.sqlite"
    checkpointer = Checkpointer(path, interval=0.01, batch=1)
    try:
        commit(writer, checkpointer)
        first = wal_salt(path)

        def restarted() -> bool:
            for _ in range(20):
                commit(writer, checkpointer)
                time.sleep(0.001)  # a steady stream: the backlog commits every few ms
            return wal_salt(path) != first

        assert await eventually(restarted, 60, every=0.0)
    finally:
        checkpointer.close()


def test_close_stops_the_thread_when_idle(tmp_path: Path, writer: sqlite3.Connection) -> None:
    checkpointer = Checkpointer(tmp_path / "db.sqlite", interval=3600, batch=1)
    commit(writer, checkpointer)  # now waiting out its interval
    checkpointer.close()
    assert not checkpointer._thread.is_alive()


async def test_a_checkpoint_waits_for_a_batch_of_commits(writer: sqlite3.Connection,
                                                         tmp_path: Path) -> None:
    """An idle bridge's occasional ledger commits do not cost a checkpoint (an fsync) each."""
    path = tmp_path / "db.sqlite"
    checkpointer = Checkpointer(path, interval=0.01, batch=5)
    try:
        before = path.stat().st_size
        for _ in range(4):
            commit(writer, checkpointer, rows=10)
        # 4 commits: none due. A fixed wait, since nothing is to happen: 20 intervals.
        await asyncio.sleep(0.2)
        assert path.stat().st_size == before
        commit(writer, checkpointer, rows=10)  # the fifth: all five are copied
        # 50 rows of 1,000 bytes: at least 10 pages more in the database file.
        assert await eventually(lambda: path.stat().st_size >= before + 10 * PAGE, 30)
    finally:
        checkpointer.close()
