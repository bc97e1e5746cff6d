"""The durable spool: every caught event and gap marker, on disk, until RabbitMQ confirms it.

DBEvents cannot be replayed, so once the bridge caught one it is the only copy.
A gap marker (a window in which events may have been lost) is as precious: it
is the only notice of that loss. Both are rows of one table, `items`, in the
order they were put (`seq`), told apart by `kind` ("event" or "gap").
The spool is an SQLite file in WAL mode with `synchronous=NORMAL`: a committed
transaction survives the process being killed at any moment (`kill -9`, OOM
killer); only a power cut or kernel crash can lose the last few transactions
before a checkpoint. Durability is per transaction, so callers batch: one
`append` or `delete` call is one transaction. `append` also takes metadata
(the catch ledger, bridge.gaps) committed in the same transaction, after the
items: what the ledger claims is then never ahead of what is stored.

Schema versions: 2 added gap markers (the `events` table became `items`, with
`kind` and `lost_from`). A version-1 spool, left by an earlier release, is
migrated in place when opened, in one transaction: its events keep their seq
and message_id, its metadata stays as it was.

The file is locked while open (an exclusive `flock`, which SQLite's own POSIX
locks never touch), so two bridges can never publish from the same spool,
while `read_stats` (`dbevent-bridge spool stats`) may still read it.

Event texts carry business data: the file is created 0600 (SQLite gives its
-wal and -shm files the same mode) in a directory created 0700, and a spool
found readable by others is reported when it is opened. An unusable file is
reported as `SpoolError` and left exactly as it was: the operator decides what
to do with it, never the bridge.

A `Spool` is not thread-safe: use it from one thread at a time (the bridge
uses it from the event-loop thread only). Its WAL is checkpointed by a thread
and connection of its own (`bridge.checkpoints`), never inside its commits.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from bridge.checkpoints import Checkpointer
from bridge.event import CaughtEvent, GapMarker, Item

log = logging.getLogger("bridge.spool")

SCHEMA_VERSION: Final = 2
# PRAGMA application_id marks the file as ours ("DBEB"), so that a path that
# points at some other application's SQLite database is refused, not altered.
APPLICATION_ID: Final = 0x44424542
_SQLITE_HEADER: Final = b"SQLite format 3\x00"
# Fixed per-row cost counted in an event's size: seq, raised_at, size and the
# record header. The size is an estimate of the row's payload, not of pages.
_ROW_OVERHEAD: Final = 24
# SQLite's default limit on host parameters is 32766; stay well below it.
_DELETE_CHUNK: Final = 500
# The WAL is reset after checkpoints; cap what it keeps on disk afterwards.
_JOURNAL_SIZE_LIMIT: Final = 64 * 1024 * 1024
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

_EVENT: Final = "event"
_GAP: Final = "gap"

# A new spool is made as version 1 was, then migrated: one schema, whichever way
# a file came to it.
_SCHEMA_V1: Final = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ("CREATE TABLE events ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " message_id TEXT NOT NULL UNIQUE,"
    " database TEXT NOT NULL,"
    " owner TEXT NOT NULL,"  # '' for a gap marker
    " name TEXT NOT NULL,"  # '' for a gap marker
    " raised_at INTEGER NOT NULL,"  # µs since the Unix epoch, UTC; a gap marker's lost_until
    " text BLOB,"  # NULL when the event carried no text; a gap marker's reason (UTF-8)
    " size INTEGER NOT NULL)"),
    f"PRAGMA application_id = {APPLICATION_ID}",
    "PRAGMA user_version = 1",
)
# Each version's steps to the next; the rename keeps the AUTOINCREMENT high-water mark.
_MIGRATIONS: Final = {
    1: (
        "ALTER TABLE events RENAME TO items",
        ("ALTER TABLE items ADD COLUMN kind TEXT NOT NULL DEFAULT 'event'"
         " CHECK (kind IN ('event', 'gap'))"),  # _EVENT, _GAP
        "ALTER TABLE items ADD COLUMN lost_from INTEGER",  # a gap marker's; NULL for an event
        "PRAGMA user_version = 2",
    ),
}
# The tables each version has.
_TABLES: Final = {1: {"events", "meta"}, 2: {"items", "meta"}}

_INSERT: Final = (
    "INSERT INTO items (seq, kind, message_id, database, owner, name, raised_at, text, size,"
    " lost_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT: Final = (
    "SELECT seq, kind, message_id, database, owner, name, raised_at, text, lost_from"
    " FROM items WHERE seq > ? ORDER BY seq LIMIT ?"
)
_UPSERT_META: Final = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class SpoolError(Exception):
    """The spool cannot be opened or used; the message says which file and what to do."""


def item_size(item: Item) -> int:
    """The bytes an event or gap marker counts for against the spool's size limit (an estimate)."""
    if isinstance(item, GapMarker):
        # lost_from is one more integer column; the reason stands in for a text.
        return (_ROW_OVERHEAD + 8 + len(item.message_id) + len(item.database.encode())
                + len(item.reason.encode()))
    text = 0 if item.text is None else len(item.text)
    return (
        _ROW_OVERHEAD + text + len(item.message_id) + len(item.database.encode())
        + len(item.owner.encode()) + len(item.name.encode())
    )


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Integer timedelta division: exact, unlike going through float seconds.
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime `micros` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


class Spool:
    """An open spool file. Create it with `Spool.open`; release it with `close`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int) -> None:
        """Use `Spool.open`; this only wires up an already validated connection and its lock."""
        self._path = path
        self._conn = conn
        self._lock_fd = lock_fd
        row = conn.execute(
            "SELECT count(*), coalesce(sum(size), 0), count(*) FILTER (WHERE kind = 'gap'),"
            " coalesce(sum(size) FILTER (WHERE kind = 'gap'), 0) FROM items"
        ).fetchone()
        self._depth: int = row[0]
        self._bytes: int = row[1]
        self._gap_markers: int = row[2]
        self._gap_bytes: int = row[3]
        seq_row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        # AUTOINCREMENT's high-water mark: seqs are never reused, even after the
        # spool emptied, so "read after seq N" stays meaningful.
        self._last_seq: int = 0 if seq_row is None else seq_row[0]
        # Checkpoints run on a thread of their own, never inside our commits (see
        # bridge.checkpoints): they would stall the event loop.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._checkpoints = Checkpointer(path)
        self._closed = False

    @classmethod
    def open(cls, path: Path, *, check: bool = True) -> Spool:
        """Open (or create) the spool at `path`, creating parent directories.

        `check` runs SQLite's quick_check, so that a damaged file is reported
        now rather than in the middle of publishing. Raises `SpoolError` when
        the path is unusable, the file is not a spool, is damaged, or another
        process holds it. The file is never deleted, renamed or modified then.
        """
        path = Path(path)
        _check_path(path)
        lock_fd = _lock(path)
        try:
            conn = sqlite3.connect(
                path, timeout=0.5, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            os.close(lock_fd)
            raise SpoolError(f"cannot open the spool {path}: {exc}") from exc
        try:
            _prepare(path, conn, check=check)
            spool = cls(path, conn, lock_fd)
        except sqlite3.Error as exc:
            conn.close()
            os.close(lock_fd)
            raise _explain(path, exc) from exc
        except BaseException:
            conn.close()
            os.close(lock_fd)
            raise
        _report_exposure(path)
        return spool

    @property
    def path(self) -> Path:
        """The spool file."""
        return self._path

    @property
    def depth(self) -> int:
        """Items (events and gap markers) in the spool (kept in memory, not counted per call)."""
        return self._depth

    @property
    def gap_markers(self) -> int:
        """How many of the items are gap markers."""
        return self._gap_markers

    @property
    def gap_bytes(self) -> int:
        """The part of `bytes` that is gap markers'."""
        return self._gap_bytes

    @property
    def last_seq(self) -> int:
        """The seq of the last item appended (0 for a spool that never held one).

        The items of one `append` get consecutive seqs ending at `last_seq`.
        """
        return self._last_seq

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def append(self, items: Sequence[Item], meta: Mapping[str, str] | None = None) -> None:
        """Store `items` durably, in order, then record `meta`, in one transaction.

        When this returns, the items and the metadata survive the process being
        killed. Raises `SpoolError` (and stores none of it) on a duplicate
        message_id or a disk error.
        """
        if not items and not meta:
            return
        first = self._last_seq + 1
        rows = [_row(first + i, item) for i, item in enumerate(items)]
        with self._transaction("append items to"):
            self._conn.executemany(_INSERT, rows)
            self._conn.executemany(_UPSERT_META, (meta or {}).items())
        self._last_seq += len(rows)
        self._depth += len(rows)
        self._bytes += sum(row[8] for row in rows)
        self._gap_markers += sum(row[1] == _GAP for row in rows)
        self._gap_bytes += sum(row[8] for row in rows if row[1] == _GAP)

    def delete(self, message_ids: Sequence[str]) -> None:
        """Forget the items with these ids, in one transaction; unknown ids are ignored."""
        if not message_ids:
            return
        deleted: list[tuple[int, str]] = []
        with self._transaction("delete items from"):
            for chunk in _chunks(message_ids, _DELETE_CHUNK):
                marks = ",".join("?" * len(chunk))
                cursor = self._conn.execute(
                    # Only '?' placeholders are formatted in.
                    f"DELETE FROM items WHERE message_id IN ({marks}) RETURNING size, kind",  # noqa: S608
                    chunk,
                )
                deleted.extend(cursor.fetchall())
        self._depth -= len(deleted)
        self._bytes -= sum(size for size, _ in deleted)
        self._gap_markers -= sum(kind == _GAP for _, kind in deleted)
        self._gap_bytes -= sum(size for size, kind in deleted if kind == _GAP)

    def read(self, after_seq: int, limit: int) -> list[tuple[int, Item]]:
        """Up to `limit` items with seq > `after_seq`, in seq order, with their seq."""
        try:
            rows = self._conn.execute(_SELECT, (after_seq, limit)).fetchall()
        except sqlite3.Error as exc:
            raise _explain(self._path, exc) from exc
        return [(row[0], _item(row)) for row in rows]

    def get_meta(self, key: str) -> str | None:
        """The value recorded under `key`, or None."""
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise _explain(self._path, exc) from exc
        return None if row is None else str(row[0])

    def close(self) -> None:
        """Checkpoint and close the file; idempotent. What is left stays for the next start."""
        if not self._closed:
            self._closed = True
            self._checkpoints.close()
            self._conn.close()  # the last connection: it checkpoints and removes the WAL
            os.close(self._lock_fd)  # releases the flock

    def _transaction(self, doing: str) -> _Transaction:
        if self._closed:
            raise SpoolError(f"cannot {doing} the spool {self._path}: it is closed")
        return _Transaction(self._conn, self._path, doing, self._checkpoints.written)

    # Last, so that the name does not shadow the builtin in the annotations above.
    @property
    def bytes(self) -> int:
        """Total `item_size` of the items in the spool (kept in memory)."""
        return self._bytes


_Row = tuple[int, str, str, str, str, str, int, bytes | None, int, int | None]


def _row(seq: int, item: Item) -> _Row:
    """`item` as the values of `_INSERT`."""
    size = item_size(item)
    if isinstance(item, GapMarker):
        return (seq, _GAP, item.message_id, item.database, "", "", to_micros(item.lost_until),
                item.reason.encode(), size, to_micros(item.lost_from))
    return (seq, _EVENT, item.message_id, item.database, item.owner, item.name,
            to_micros(item.raised_at), item.text, size, None)


def _item(row: tuple[int, str, str, str, str, str, int, bytes | None, int | None]) -> Item:
    """The item a row of `_SELECT` stores."""
    _, kind, message_id, database, owner, name, raised_at, text, lost_from = row
    if kind == _GAP:
        assert lost_from is not None  # as _row wrote them
        assert text is not None
        return GapMarker(database=database, lost_from=from_micros(lost_from),
                         lost_until=from_micros(raised_at), reason=text.decode(),
                         message_id=message_id)
    return CaughtEvent(database=database, owner=owner, name=name,
                       raised_at=from_micros(raised_at), text=text, message_id=message_id)


class _Transaction:
    """BEGIN … COMMIT, or ROLLBACK and a `SpoolError` that names the file."""

    def __init__(self, conn: sqlite3.Connection, path: Path, doing: str,
                 committed: Callable[[], None]) -> None:
        self._conn = conn
        self._path = path
        self._doing = doing
        self._committed = committed

    def __enter__(self) -> None:
        try:
            self._conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot {self._doing} the spool {self._path}: {exc}") from exc

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc is None:
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as commit_exc:
                exc = commit_exc
            else:
                self._committed()
                return
        if self._conn.in_transaction:
            # The original error is the one worth reporting, not a failed rollback.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.IntegrityError):
            raise SpoolError(
                f"cannot {self._doing} the spool {self._path}: an item with the same"
                f" message_id is already spooled ({exc})"
            ) from exc
        if isinstance(exc, sqlite3.Error):
            raise SpoolError(f"cannot {self._doing} the spool {self._path}: {exc}") from exc


def _check_path(path: Path) -> None:
    """Refuse, in words, what SQLite would report obscurely; creates parent dirs."""
    if path.is_dir():
        raise SpoolError(
            f"the spool path {path} is a directory; set the spool path to a file name"
        )
    try:
        # 0700 for the directory we create; one that exists is the operator's.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise SpoolError(
            f"cannot create the directory for the spool {path}: {exc}; "
            "fix the path or the permissions"
        ) from exc
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SpoolError(f"cannot read the spool {path}: {exc}; fix the permissions") from exc
    # An empty file is an empty SQLite database; anything else must say it is one.
    if header and header != _SQLITE_HEADER:
        raise SpoolError(
            f"{path} is not a spool (not an SQLite database). It was left untouched: "
            "it may hold events of an earlier run; move it aside (keep it for inspection) "
            "or set another spool path"
        )


def _lock(path: Path) -> int:
    """Create the file 0600 if missing and lock it for this process: the lock's descriptor.

    Created here rather than by SQLite, which would create it 0644 (less the
    umask); SQLite then gives the -wal and -shm files the mode of this file.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SpoolError(f"cannot open the spool {path}: {exc}; fix the permissions") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolError(
            f"the spool {path} is in use by another process (another bridge?); "
            "stop it or give this bridge its own spool path"
        ) from None
    return fd


def _report_exposure(path: Path) -> None:
    """Warn once when the spool or its -wal/-shm file is readable by others than its owner."""
    exposed: dict[Path, int] = {}
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o044:
                exposed[file] = mode
    if exposed:
        modes = ", ".join(f"{file.name} {mode:04o}" for file, mode in exposed.items())
        log.warning(
            "the spool %s is readable by other users (%s) and holds event texts; "
            "restrict it: chmod 600 %s", path, modes, " ".join(map(str, exposed)),
            extra={"path": str(path)},
        )


def _prepare(path: Path, conn: sqlite3.Connection, *, check: bool) -> None:
    """Validate and (for a new file) initialise, without altering a foreign file."""
    # Read-only inspection first: switching to WAL would rewrite the header of
    # a file that turns out not to be ours.
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    fresh = app_id == 0 and not tables
    if not fresh:
        _validate(path, app_id, version, tables)
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise SpoolError(f"cannot put the spool {path} in WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
    _migrate(path, conn, None if fresh else version)
    if check:
        result = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if result != ["ok"]:
            raise SpoolError(
                f"the spool {path} is damaged ({'; '.join(map(str, result[:3]))}). It was left "
                "untouched: move it aside (keep it: it may hold unpublished events) and restart"
            )


def _migrate(path: Path, conn: sqlite3.Connection, version: int | None) -> None:
    """Bring the schema from `version` (None: a new file) to SCHEMA_VERSION, in one transaction.

    A failure rolls everything back: a half-migrated file is never left behind.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version is None:
            for statement in _SCHEMA_V1:
                conn.execute(statement)
            version = 1
        elif version < SCHEMA_VERSION:
            log.info("migrating the spool %s from schema version %d to %d", path, version,
                     SCHEMA_VERSION, extra={"path": str(path)})
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step]:
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _validate(path: Path, app_id: int, version: int, tables: set[str]) -> None:
    """Refuse what is not a spool, or one of a schema this bridge cannot read or migrate."""
    if app_id != APPLICATION_ID or not tables & {"events", "items"} or "meta" not in tables:
        raise SpoolError(
            f"{path} is an SQLite database but not a dbevent-bridge spool; it was left "
            "untouched: set another spool path"
        )
    if version not in _TABLES:
        raise SpoolError(
            f"the spool {path} has schema version {version}, this bridge reads versions up to "
            f"{SCHEMA_VERSION}; drain it with the bridge version that wrote it, or move it aside"
        )
    if not _TABLES[version] <= tables:
        raise SpoolError(
            f"the spool {path} (schema version {version}) lacks its tables; it was left "
            "untouched: move it aside (keep it for inspection) or set another spool path"
        )


def _explain(path: Path, exc: sqlite3.Error) -> SpoolError:
    """Turn an SQLite error into a `SpoolError` that tells the operator what to do."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return SpoolError(
            f"the spool {path} is in use by another process (another bridge?); "
            "stop it or give this bridge its own spool path"
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return SpoolError(
            f"the spool {path} is damaged ({text}). It was left untouched: move it aside "
            "(keep it: it may hold unpublished events) and restart"
        )
    return SpoolError(f"cannot use the spool {path}: {text}")


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """What a spool holds: `dbevent-bridge spool stats`."""

    path: Path
    events: int
    gap_markers: int
    event_bytes: int  # the sum of `item_size` (gap markers too), as the size limit counts it
    file_bytes: int  # the file with its -wal, as the disk counts it
    oldest_raised_at: datetime | None  # of the events


_STATS: Final = (
    "SELECT count(*) FILTER (WHERE kind = 'event'), count(*) FILTER (WHERE kind = 'gap'),"
    " coalesce(sum(size), 0), min(raised_at) FILTER (WHERE kind = 'event') FROM items"
)
_STATS_V1: Final = "SELECT count(*), 0, coalesce(sum(size), 0), min(raised_at) FROM events"


def read_stats(path: Path) -> SpoolStats:
    """Read what the spool at `path` holds, read-only, even while a bridge holds it open.

    WAL mode lets a reader see every committed transaction without waiting
    for, or holding up, the bridge's writes. Raises SpoolError when there is
    no spool there or it cannot be read.
    """
    if not path.is_file():
        raise SpoolError(f"there is no spool at {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise _explain(path, exc) from exc
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        _validate(path, app_id, version, tables)
        # Read-only: a version-1 spool (its bridge still runs) is read as it is.
        query = _STATS_V1 if version == 1 else _STATS
        count, gaps, size, oldest = conn.execute(query).fetchone()
    except sqlite3.Error as exc:
        raise _explain(path, exc) from exc
    finally:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    file_bytes = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return SpoolStats(
        path=path,
        events=count,
        gap_markers=gaps,
        event_bytes=size,
        file_bytes=file_bytes,
        oldest_raised_at=None if oldest is None else from_micros(oldest),
    )
