"""The AMQP message of an event and of a gap marker: exact body, properties, headers."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import aio_pika
import pytest
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.v1.event import CloudEvent

from bridge.event import CaughtEvent, GapMarker
from bridge.message import (
    MessageFormat,
    Outgoing,
    build_event_outgoing,
    build_gap_outgoing,
    check_encoding,
    event_body,
    format_timestamp,
    gap_body,
)

RAISED = datetime(2026, 11, 25, 8, 22, 23, 123456, tzinfo=UTC)


def _event(text: bytes | None, owner: str = "ingres", name: str = "order_placed") -> CaughtEvent:
    return CaughtEvent("salesdb", owner, name, RAISED, text, message_id="id-1")


def test_exact_body() -> None:
    assert event_body(_event(b"order 42")) == (
        b'{"database":"salesdb","owner":"ingres","name":"order_placed",'
        b'"raised_at":"2026-11-25T08:22:23.123456Z","text":"order 42"}'
    )


def test_no_text_is_null_without_base64() -> None:
    body = json.loads(event_body(_event(None)))
    assert body["text"] is None
    assert "text_base64" not in body


@pytest.mark.parametrize(
    "text",
    [b"", b"x", b"y" * 256, b'say "hi" \\ back', "né ünïcödé €".encode(), b"\x00\x01\n\t"],
)
def test_valid_texts_round_trip(text: bytes) -> None:
    body = json.loads(event_body(_event(text)))
    assert body["text"] == text.decode("utf-8")
    assert "text_base64" not in body
    assert list(body) == ["database", "owner", "name", "raised_at", "text"]


def test_non_ascii_text_is_written_as_utf8_not_escaped() -> None:
    assert '"text":"né"'.encode() in event_body(_event("né".encode()))


@pytest.mark.parametrize("text", [b"\xff", b"caf\xe9", b"\xc3", bytes(range(256))])
def test_invalid_utf8_goes_to_base64(text: bytes) -> None:
    body = json.loads(event_body(_event(text)))
    assert body["text"] is None
    assert base64.b64decode(body["text_base64"], validate=True) == text
    assert list(body) == ["database", "owner", "name", "raised_at", "text", "text_base64"]


def test_configured_encoding_is_used() -> None:
    assert json.loads(event_body(_event(b"caf\xe9"), "latin-1"))["text"] == "café"
    # 0x81 is undefined in cp1252: not valid there either.
    assert json.loads(event_body(_event(b"\x81"), "cp1252"))["text_base64"] == "gQ=="


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (RAISED, "2026-11-25T08:22:23.123456Z"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000000Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC), "2026-01-02T03:04:05.000007Z"),
        (
            datetime(2026, 1, 2, 1, 0, 0, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-01T23:00:00.000000Z",
        ),
    ],
)
def test_timestamp_format(moment: datetime, text: str) -> None:
    assert format_timestamp(moment) == text


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_timestamp(datetime(2026, 1, 1))  # noqa: DTZ001 (a naive time on purpose)


def test_headers_carry_raw_values() -> None:
    props = build_event_outgoing(_event(None, owner="o.w n", name="é#*")).properties
    assert props.headers is not None
    assert props.headers["x-dbevent-owner"] == "o.w n"
    assert props.headers["x-dbevent-name"] == "é#*"
    assert props.message_type == "o.w n.é#*"


def test_gap_marker_message() -> None:
    marker = GapMarker(
        database="salesdb",
        lost_from=datetime(2026, 11, 25, 8, 0, tzinfo=UTC),
        lost_until=datetime(2026, 11, 25, 8, 5, 0, 500, tzinfo=UTC),
        reason="ingres connection lost",
        message_id="gap-1",
    )
    assert gap_body(marker) == (
        b'{"database":"salesdb","lost_from":"2026-11-25T08:00:00.000000Z",'
        b'"lost_until":"2026-11-25T08:05:00.000500Z","reason":"ingres connection lost"}'
    )
    outgoing = build_gap_outgoing(marker)
    props = outgoing.properties
    assert outgoing.body == gap_body(marker)
    assert props.message_type == "dbevent-bridge.gap"
    assert props.content_type == "application/json"
    assert props.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert props.message_id == "gap-1"
    assert props.app_id == "dbevent-bridge"
    assert props.timestamp == marker.lost_until  # AMQP truncates to seconds on the wire
    assert props.headers == {"x-dbevent-database": "salesdb"}


def _marker() -> GapMarker:
    return GapMarker("salesdb", RAISED, RAISED, "ingres connection lost", message_id="gap-1")


def test_outgoing_event_properties_are_the_wire_values() -> None:
    outgoing = build_event_outgoing(_event(b"t"))
    props = outgoing.properties
    assert outgoing.body == event_body(_event(b"t"))
    assert (props.content_type, props.delivery_mode, props.priority) == ("application/json", 2, 0)
    assert (props.message_id, props.timestamp, props.app_id) == ("id-1", RAISED, "dbevent-bridge")
    assert props.message_type == "ingres.order_placed"
    assert props.headers == {
        "x-dbevent-database": "salesdb",
        "x-dbevent-owner": "ingres",
        "x-dbevent-name": "order_placed",
    }
    assert (props.content_encoding, props.correlation_id, props.reply_to) == (None, None, None)
    assert (props.expiration, props.user_id, props.cluster_id) == (None, None, "")


@pytest.mark.parametrize(
    "event",
    [_event(b"t"), _event(None, owner="o.w n", name="\u00e9#*"), _event(b"\xff", name="x")],
)
def test_outgoing_event_properties_equal_aio_pikas(event: CaughtEvent) -> None:
    # What the publisher sends must be exactly what aio_pika.Message would send.
    reference = aio_pika.Message(
        body=b"", content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event.message_id, timestamp=event.raised_at, app_id="dbevent-bridge",
        type=f"{event.owner}.{event.name}",
        headers={"x-dbevent-database": event.database, "x-dbevent-owner": event.owner,
                 "x-dbevent-name": event.name},
    )
    assert build_event_outgoing(event).properties == reference.properties


def test_outgoing_gap_properties_equal_aio_pikas() -> None:
    marker = _marker()
    reference = aio_pika.Message(
        body=b"", content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id="gap-1", timestamp=RAISED, app_id="dbevent-bridge",
        type="dbevent-bridge.gap", headers={"x-dbevent-database": "salesdb"},
    )
    outgoing = build_gap_outgoing(marker)
    assert outgoing.body == gap_body(marker)
    assert outgoing.properties == reference.properties


def test_gap_markers_get_unique_ids() -> None:
    now = datetime.now(UTC)
    assert GapMarker("d", now, now, "r").message_id != GapMarker("d", now, now, "r").message_id


@pytest.mark.parametrize("encoding", ["nope", "hex", "rot13"])
def test_unusable_encodings(encoding: str) -> None:
    with pytest.raises(ValueError, match="unusable text encoding"):
        check_encoding(encoding)


# --- CloudEvents (structured mode), parsed with the CloudEvents SDK ----------------------


def _parsed(outgoing: Outgoing) -> CloudEvent:
    """What a CloudEvents consumer makes of the message (the SDK's RabbitMQ binding)."""
    props = outgoing.properties
    assert props.content_type == "application/cloudevents+json"
    message = rabbitmq.RabbitMQMessage(headers={}, content_type=props.content_type,
                                       body=outgoing.body)
    return rabbitmq.from_rabbitmq_event(message)


CE = MessageFormat("cloudevents", sources={"salesdb": "ingres://dbhost/salesdb"})


def test_cloudevent_of_an_event_with_text() -> None:
    event = _parsed(CE.event(_event("order 42 for 東京, naïve".encode())))
    assert event.get_specversion() == "1.0"
    assert event.get_id() == "id-1"
    assert event.get_source() == "ingres://dbhost/salesdb"
    assert event.get_type() == "ingres.order_placed"
    assert event.get_time() == RAISED
    assert event.get_subject() == "salesdb"
    assert event.get_datacontenttype() == "text/plain; charset=utf-8"
    assert event.get_data() == "order 42 for 東京, naïve"


def test_cloudevent_of_text_that_does_not_decode_carries_the_bytes() -> None:
    raw = b"\xff\xfe caf\xe9"
    event = _parsed(CE.event(_event(raw)))
    assert event.get_data() == raw
    assert event.get_datacontenttype() == "application/octet-stream"
    assert "data_base64" in json.loads(CE.event(_event(raw)).body)


def test_cloudevent_of_an_event_without_text_has_no_data() -> None:
    body = json.loads(CE.event(_event(None)).body)
    assert "data" not in body
    assert "data_base64" not in body
    assert _parsed(CE.event(_event(None))).get_data() is None


def test_cloudevent_keeps_the_amqp_properties_of_the_json_format() -> None:
    plain = build_event_outgoing(_event(b"x")).properties
    structured = CE.event(_event(b"x")).properties
    for name in ("message_id", "timestamp", "message_type", "app_id", "headers",
                 "delivery_mode", "priority"):
        assert getattr(structured, name) == getattr(plain, name), name


def test_cloudevent_source_of_an_unknown_database() -> None:
    other = CaughtEvent("archive", "ingres", "x", RAISED, None, message_id="id-2")
    assert _parsed(CE.event(other)).get_source() == "ingres:///archive"


def test_cloudevent_of_a_gap_marker() -> None:
    marker = GapMarker("salesdb", RAISED, RAISED + timedelta(seconds=3), "ingres connection lost",
                       message_id="gap-1")
    event = _parsed(CE.gap(marker))
    assert event.get_type() == "dbevent-bridge.gap"
    assert event.get_id() == "gap-1"
    assert event.get_time() == RAISED + timedelta(seconds=3)
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == json.loads(gap_body(marker))


def test_json_format_is_the_plain_message() -> None:
    plain = MessageFormat()
    assert plain.event(_event(b"x")) == build_event_outgoing(_event(b"x"))
    marker = GapMarker("salesdb", RAISED, RAISED, "r", message_id="gap-1")
    assert plain.gap(marker) == build_gap_outgoing(marker)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format must be one of json, cloudevents"):
        MessageFormat("xml")  # type: ignore[arg-type]
