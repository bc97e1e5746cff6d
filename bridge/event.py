"""What flows through the pipeline: the DBEvents the catcher caught, and gap markers.

Both travel the same way, in one order: backlog, spool, publisher (`Item`).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

# The namespace of stable event ids (uuid5): fixed for ever, or every id changes.
_EVENT_ID_NAMESPACE: Final = uuid.UUID("6f1d6c1e-4b0a-5d3e-9c57-2f0e8a1b7d42")
# How far back the ordinals of identical events are remembered. Events reach a
# session in raise order, stamped in whole seconds; this only absorbs a DBMS
# clock that steps back a little.
_ORDINAL_MEMORY: Final = timedelta(seconds=2)


def new_message_id() -> str:
    """A random id, for what has no identity of its own (gap markers)."""
    return uuid.uuid4().hex


def stable_message_id(  # noqa: PLR0917 (the fields that make an event's identity, in order)
    database: str, owner: str, name: str, raised_at: datetime, text: bytes | None, ordinal: int
) -> str:
    """The id of a DBEvent, derived from the event itself (see `EventIdentities`)."""
    canonical = json.dumps([
        database, owner, name, raised_at.astimezone(UTC).isoformat(),
        None if text is None else text.hex(), ordinal,
    ])
    return uuid.uuid5(_EVENT_ID_NAMESPACE, canonical).hex


class EventIdentities:
    """Gives each caught DBEvent a message_id that any bridge catching it computes alike.

    The id is a uuid5 of the database, owner, name, raise time, text and the
    event's ordinal among identical events (same everything) raised in the
    same second: Ingres stamps whole seconds, so the ordinal is what tells two
    identical events of one second apart. A restarted bridge, or a second
    bridge of an active/standby pair, thus publishes an event under the same
    id. Caveat: the ordinal counts what this bridge caught. In a second in
    which one bridge was not registered for all of it (it was starting or
    reconnecting), identical events may be numbered differently by the two
    bridges, or a restarted one may reuse an id a published event had; such a
    second lies inside the window of a gap marker, unless the other bridge of
    a pair caught all of it. Used on the catcher thread only.
    """

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str, datetime, bytes | None]] = Counter()
        self._latest: datetime | None = None

    def observe(self, events: Iterable[CaughtEvent]) -> None:
        """Count events caught by an earlier run (left in the spool), so ids do not repeat."""
        for event in events:
            self._ordinal(event.database, event.owner, event.name, event.raised_at, event.text)

    def message_id(
        self, database: str, owner: str, name: str, raised_at: datetime, text: bytes | None
    ) -> str:
        """The stable id of the next caught event with these values."""
        ordinal = self._ordinal(database, owner, name, raised_at, text)
        return stable_message_id(database, owner, name, raised_at, text, ordinal)

    def _ordinal(
        self, database: str, owner: str, name: str, raised_at: datetime, text: bytes | None
    ) -> int:
        if self._latest is None or raised_at > self._latest:
            self._latest = raised_at
            horizon = raised_at - _ORDINAL_MEMORY
            for old in [key for key in self._counts if key[3] < horizon]:
                del self._counts[old]
        key = (database, owner, name, raised_at, text)
        ordinal = self._counts[key]
        self._counts[key] = ordinal + 1
        return ordinal


@dataclass(frozen=True, slots=True)
class DBEvent:
    """A DBEvent as one catch of the OpenAPI delivered it (bridge.openapi.Session).

    `text` is the raw bytes the server sent (at most 256), or None when the event
    carried no text. Decoding is the publisher's business: Ingres does not say
    which encoding the text is in, and bytes that are not valid must not be lost.
    """

    database: str
    owner: str
    name: str
    raised_at: datetime  # aware, UTC
    text: bytes | None


@dataclass(frozen=True, slots=True)
class CaughtEvent(DBEvent):
    """A DBEvent plus the identity the bridge gives it: what flows through the pipeline."""

    message_id: str = field(default_factory=new_message_id)  # catcher: stable_message_id


@dataclass(frozen=True, slots=True)
class GapMarker:
    """Events of `database` raised between `lost_from` and `lost_until` may be lost.

    Both times are aware datetimes in the DBMS's clock, as `raised_at` is
    (converted to UTC in the message; bridge.gaps). `reason`
    is a short human-readable explanation (e.g. "ingres connection lost").
    """

    database: str
    lost_from: datetime
    lost_until: datetime
    reason: str
    message_id: str = field(default_factory=new_message_id)


# One item of the pipeline: the backlog, the spool and the publisher carry both
# kinds in one order, so a gap marker is as durable as the events around it.
Item = CaughtEvent | GapMarker
