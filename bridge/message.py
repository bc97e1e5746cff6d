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

CloudEvents (`amqp.format = cloudevents`)
----------------------------------------
Structured mode of the CloudEvents AMQP binding: content_type
`application/cloudevents+json`, the body one CloudEvent (JSON format 1.0)::

    {"specversion": "1.0", "id": "<message_id>", "source": "ingres://NODE/DATABASE",
     "type": "<owner>.<name>", "time": "<raised_at>", "subject": "<database>",
     "datacontenttype": "text/plain; charset=utf-8", "data": "<text>"}

`data` is the decoded text; when the bytes do not decode, `data_base64` holds
them instead (datacontenttype `application/octet-stream`); an event without
text has neither. A gap marker is a CloudEvent of type `dbevent-bridge.gap`
whose `data` is the JSON object above (datacontenttype `application/json`).
The AMQP properties and headers are those of the JSON format.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal

import aiormq
import aiormq.abc

from bridge.event import CaughtEvent, GapMarker

APP_ID = "dbevent-bridge"
CONTENT_TYPE = "application/json"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
FORMATS = ("json", "cloudevents")
GAP_MESSAGE_TYPE = "dbevent-bridge.gap"
HEADER_DATABASE = "x-dbevent-database"
HEADER_OWNER = "x-dbevent-owner"
HEADER_NAME = "x-dbevent-name"
PERSISTENT = 2  # AMQP delivery_mode of a persistent message
# aio-pika puts priority 0 on the wire when none is given; the bridge always has.
PRIORITY = 0


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


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message as the publisher hands it to aiormq: body and AMQP properties.

    The properties are built directly (not via `aio_pika.Message`, whose only
    use here was its `.properties`): the same values, a third of the cost.
    """

    body: bytes
    properties: aiormq.spec.Basic.Properties


@lru_cache(maxsize=4096)
def _event_type_and_headers(
    database: str, owner: str, name: str
) -> tuple[str, aiormq.abc.FieldTable]:
    # Per (database, owner, name), as the routing key cache: a handful of names
    # in practice, bounded anyway. The dict is shared by every message of the
    # name; neither pamqp nor aiormq modifies the headers they encode.
    return f"{owner}.{name}", {HEADER_DATABASE: database, HEADER_OWNER: owner, HEADER_NAME: name}


def build_event_outgoing(event: CaughtEvent, encoding: str = "utf-8") -> Outgoing:
    """The persistent AMQP message for a caught event (body, properties, headers)."""
    body = event_body(event, encoding)
    message_type, headers = _event_type_and_headers(event.database, event.owner, event.name)
    return Outgoing(body, aiormq.spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        headers=headers,
        delivery_mode=PERSISTENT,
        priority=PRIORITY,
        message_id=event.message_id,
        timestamp=event.raised_at,
        message_type=message_type,
        app_id=APP_ID,
    ))


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


def build_gap_outgoing(marker: GapMarker) -> Outgoing:
    """The persistent AMQP message announcing a gap (timestamp: `lost_until`)."""
    return Outgoing(gap_body(marker), aiormq.spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        headers={HEADER_DATABASE: marker.database},
        delivery_mode=PERSISTENT,
        priority=PRIORITY,
        message_id=marker.message_id,
        timestamp=marker.lost_until,
        message_type=GAP_MESSAGE_TYPE,
        app_id=APP_ID,
    ))


# --------------------------------------------------------------------------- formats


def _cloudevent(
    message_id: str, source: str, kind: str, time: datetime, subject: str
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": message_id,
        "source": source,
        "type": kind,
        "time": format_timestamp(time),
        "subject": subject,
    }


@dataclass(frozen=True, slots=True)
class MessageFormat:
    """How events and gap markers are written: the bridge's JSON, or CloudEvents.

    `sources` maps a database to its CloudEvents `source`; a database it does
    not know (an event an earlier configuration left in the spool) gets
    `ingres:///DATABASE`.
    """

    kind: Literal["json", "cloudevents"] = "json"
    encoding: str = "utf-8"
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        """Reject an unknown format or text encoding."""
        if self.kind not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {self.kind!r}")
        check_encoding(self.encoding)

    def source(self, database: str) -> str:
        """The CloudEvents source of events from `database`."""
        return self.sources.get(database) or f"ingres:///{database}"

    def event(self, event: CaughtEvent) -> Outgoing:
        """The message for a caught event."""
        outgoing = build_event_outgoing(event, self.encoding)
        if self.kind == "json":
            return outgoing
        body = _cloudevent(event.message_id, self.source(event.database),
                           f"{event.owner}.{event.name}", event.raised_at, event.database)
        if event.text is not None:
            try:
                body["data"] = event.text.decode(self.encoding, errors="strict")
                body["datacontenttype"] = f"text/plain; charset={self.encoding}"
            except UnicodeDecodeError:
                body["data_base64"] = base64.b64encode(event.text).decode("ascii")
                body["datacontenttype"] = "application/octet-stream"
        return _as_cloudevent(outgoing, body)

    def gap(self, marker: GapMarker) -> Outgoing:
        """The message announcing a gap."""
        outgoing = build_gap_outgoing(marker)
        if self.kind == "json":
            return outgoing
        body = _cloudevent(marker.message_id, self.source(marker.database), GAP_MESSAGE_TYPE,
                           marker.lost_until, marker.database)
        body["datacontenttype"] = CONTENT_TYPE
        body["data"] = json.loads(outgoing.body)
        return _as_cloudevent(outgoing, body)


def _as_cloudevent(outgoing: Outgoing, body: dict[str, Any]) -> Outgoing:
    """`outgoing` with a CloudEvent for a body and its content type; other properties kept."""
    props = outgoing.properties
    return Outgoing(_dumps(body), aiormq.spec.Basic.Properties(
        content_type=CLOUDEVENTS_CONTENT_TYPE,
        headers=props.headers,
        delivery_mode=props.delivery_mode,
        priority=props.priority,
        message_id=props.message_id,
        timestamp=props.timestamp,
        message_type=props.message_type,
        app_id=props.app_id,
    ))
