"""The AMQP messages the bridge publishes: one per caught event, plus gap markers.

Event message
-------------
Body (JSON object, UTF-8, keys in this order)::

    {"database": "...", "owner": "...", "name": "...",
     "raised_at": "2026-11-25T08:22:23.123456Z", "text": "..." | null}

- `raised_at` is the server's raise time in UTC, ISO-8601, ALWAYS with six
  fractional digits and a `Z` suffix (`YYYY-MM-DDTHH:MM:SS.ffffffZ`); one fixed
  width makes it sortable as a string and trivially parsed.
- `text` is the event text decoded with the configured encoding (UTF-8 by
  default), or null when the event carried no text.
- When the text bytes are NOT valid in that encoding, `text` is null and an
  extra key `text_base64` holds the raw bytes (standard base64, padded), so no
  byte is lost or garbled. `text_base64` is absent otherwise.

Properties: content_type `application/json`, delivery_mode persistent,
message_id (the caught event's id, the same on every retry, so consumers can
deduplicate), timestamp (raise time; AMQP carries whole seconds), app_id
`dbevent-bridge`, type `<owner>.<name>`, and headers `x-dbevent-database`,
`x-dbevent-owner`, `x-dbevent-name` (raw, unencoded values).

Gap marker
----------
Published after the bridge lost events it could not catch (an Ingres outage):
type `dbevent-bridge.gap`, body
`{"database", "lost_from", "lost_until", "reason"}` with the same timestamp
format, header `x-dbevent-database`; routed with the configured gap routing key.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika

from bridge.event import CaughtEvent, new_message_id

APP_ID = "dbevent-bridge"
CONTENT_TYPE = "application/json"
GAP_MESSAGE_TYPE = "dbevent-bridge.gap"
HEADER_DATABASE = "x-dbevent-database"
HEADER_OWNER = "x-dbevent-owner"
HEADER_NAME = "x-dbevent-name"


@dataclass(frozen=True, slots=True)
class GapMarker:
    """Events of `database` raised between `lost_from` and `lost_until` may be lost.

    Both times are aware datetimes (converted to UTC in the message). `reason`
    is a short human-readable explanation (e.g. "ingres connection lost").
    """

    database: str
    lost_from: datetime
    lost_until: datetime
    reason: str
    message_id: str = field(default_factory=new_message_id)


def format_timestamp(moment: datetime) -> str:
    """`moment` in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (always 6 fractional digits)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: the bridge only handles aware times")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_encoding(encoding: str) -> None:
    """Raise ValueError unless `encoding` names a text codec Python knows."""
    try:
        # bytes.decode rejects unknown codecs and bytes-to-bytes ones ("hex") alike.
        b"a".decode(encoding, errors="replace")
    except LookupError as exc:
        raise ValueError(f"unusable text encoding {encoding!r}: {exc}") from None


def _dumps(body: dict[str, Any]) -> bytes:
    # stdlib json: bodies are a few hundred bytes, so a compiled library such as
    # orjson would buy nothing measurable; json is exact, well known and adds no
    # dependency. ensure_ascii=False keeps non-ASCII readable (the body is UTF-8).
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def event_body(event: CaughtEvent, encoding: str = "utf-8") -> bytes:
    """The JSON body of the event's message (see module docstring)."""
    body: dict[str, Any] = {
        "database": event.database,
        "owner": event.owner,
        "name": event.name,
        "raised_at": format_timestamp(event.raised_at),
        "text": None,
    }
    if event.text is not None:
        try:
            body["text"] = event.text.decode(encoding, errors="strict")
        except UnicodeDecodeError:
            body["text_base64"] = base64.b64encode(event.text).decode("ascii")
    return _dumps(body)


def build_event_message(event: CaughtEvent, encoding: str = "utf-8") -> aio_pika.Message:
    """The persistent AMQP message for a caught event (body, properties, headers)."""
    return aio_pika.Message(
        body=event_body(event, encoding),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event.message_id,
        timestamp=event.raised_at,
        app_id=APP_ID,
        type=f"{event.owner}.{event.name}",
        headers={
            HEADER_DATABASE: event.database,
            HEADER_OWNER: event.owner,
            HEADER_NAME: event.name,
        },
    )


def gap_body(marker: GapMarker) -> bytes:
    """The JSON body of a gap marker (see module docstring)."""
    return _dumps(
        {
            "database": marker.database,
            "lost_from": format_timestamp(marker.lost_from),
            "lost_until": format_timestamp(marker.lost_until),
            "reason": marker.reason,
        }
    )


def build_gap_message(marker: GapMarker) -> aio_pika.Message:
    """The persistent AMQP message announcing a gap (timestamp: `lost_until`)."""
    return aio_pika.Message(
        body=gap_body(marker),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=marker.message_id,
        timestamp=marker.lost_until,
        app_id=APP_ID,
        type=GAP_MESSAGE_TYPE,
        headers={HEADER_DATABASE: marker.database},
    )
