"""WAL checkpoints of the spool on a thread of their own, off the event loop.

Left to itself, SQLite checkpoints inside the commit that takes the WAL past
`wal_autocheckpoint` pages: that commit copies the WAL into the database file
and fsyncs both, on the event loop, which then stands still for several
milliseconds (tens under load) about once a second at 2,000 events/s — the
slowest events of a steady stream waited for exactly that (tests/benchmarks,
`--stages`). So the spool's connection never checkpoints, and a second
connection on this thread runs PASSIVE checkpoints (they neither wait for nor
block the writer; SQLite releases the GIL meanwhile) shortly after commits.

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
# SQLite restarts the WAL from its beginning only when a write begins with every
# frame checkpointed. A checkpoint copies what was in the WAL when it started, so
# under a steady stream it is repeated (each round is shorter) until no commit
# came in between, or this many rounds; else the next interval tries again.
_ROUNDS: Final = 5


class Checkpointer:
    """Checkpoints the WAL of the SQLite file `path` within `interval` of `written()`."""

    def __init__(self, path: Path, interval: float = INTERVAL) -> None:
        self._path = path
        self._interval = interval
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="spool-checkpoints", daemon=True)
        self._thread.start()

    def written(self) -> None:
        """A transaction was committed; cheap, called from the writing thread."""
        if not self._dirty.is_set():
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
