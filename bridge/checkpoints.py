"""WAL checkpoints of the spool on a thread of their own, off the event loop.

Left to itself, SQLite checkpoints inside the commit that takes the WAL past
`wal_autocheckpoint` pages: that commit copies the WAL into the database file
and fsyncs both, on the event loop, which then stands still for several
milliseconds (tens under load) about once a second at 2,000 events/s — the
slowest events of a steady stream waited for exactly that (tests/benchmarks,
`--stages`). So the spool's connection never checkpoints, and a second
connection on this thread runs PASSIVE checkpoints (they neither wait for nor
block the writer; SQLite releases the GIL meanwhile) shortly after every
`BATCH` commits. Not after each one: an idle bridge still commits its catch
ledger every few seconds, and a checkpoint (with its fsync) for each of those
cost more CPU than the idle bridge used for everything else.

Durability is unchanged: a transaction is durable once its COMMIT has written
it to the WAL, whoever copies it into the database file later.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Final

log = logging.getLogger("bridge.spool")

# Commits are checkpointed this long after the first of them: one checkpoint
# for all the commits of the interval, not one per commit.
INTERVAL: Final = 0.5
# A checkpoint is due once this many commits are in the WAL (each adds a page or
# a few; SQLite's own automatic checkpoint waits for 1,000 pages). At 2,000
# events/s that is a fraction of a second; idle, a few minutes of ledger records.
BATCH: Final = 100
# SQLite restarts the WAL from its beginning only when a write begins with every
# frame checkpointed. A checkpoint copies what was in the WAL when it started, so
# under a steady stream it is repeated (each round is shorter) until no commit
# came in between, or this many rounds; else the next interval tries again.
_ROUNDS: Final = 5


class Checkpointer:
    """Checkpoints the WAL of the SQLite file `path` within `interval` of every `batch` commits."""

    def __init__(self, path: Path, interval: float = INTERVAL, batch: int = BATCH) -> None:
        self._path = path
        self._interval = interval
        self._batch = batch
        self._commits = 0  # since the last checkpoint was due; the writing thread's own
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="spool-checkpoints", daemon=True)
        self._thread.start()

    def written(self) -> None:
        """A transaction was committed; cheap, called from the writing thread."""
        self._commits += 1
        if self._commits >= self._batch:
            self._commits = 0
            self._dirty.set()

    def close(self) -> None:
        """Stop (after the checkpoint under way, if any) and close the connection."""
        self._stop.set()
        self._dirty.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        while True:
            self._dirty.wait()
            if self._stop.wait(self._interval):
                return  # the spool's connection checkpoints as it closes
            self._dirty.clear()
            self._checkpoint()

    def _checkpoint(self) -> None:
        try:
            frames = -1
            for _ in range(_ROUNDS):
                _busy, log_frames, _done = self._conn.execute(
                    "PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
                if log_frames in (frames, 0, -1):
                    break  # nothing was committed since the last round: all copied
                frames = log_frames
        except sqlite3.Error as exc:
            if not self._failing:
                log.warning("cannot checkpoint the spool %s: %s; its WAL grows until a "
                            "checkpoint succeeds (retried after each commit)", self._path, exc)
            self._failing = True
            self._dirty.set()
            return
        if self._failing:
            log.info("the spool %s checkpoints again", self._path)
            self._failing = False
