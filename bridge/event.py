"""The one value that flows through the pipeline: a DBEvent the catcher caught."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime


def new_message_id() -> str:
    """A unique id for a caught event; it stays with the event on every retry."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class CaughtEvent:
    """A DBEvent as the OpenAPI delivered it, plus the identity the bridge gives it.

    `text` is the raw bytes the server sent (at most 256), or None when the event
    carried no text. Decoding is the publisher's business: Ingres does not say
    which encoding the text is in, and bytes that are not valid must not be lost.
    """

    database: str
    owner: str
    name: str
    raised_at: datetime  # aware, UTC
    text: bytes | None
    message_id: str = field(default_factory=new_message_id)
    # Monotonic clock reading (time.monotonic()) taken when the catch completed;
    # used for latency metrics only, never persisted meaningfully across restarts.
    caught_monotonic: float = 0.0
