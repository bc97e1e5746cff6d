"""Routing keys: template validation, value encoding, the 255-byte limit."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote

import pytest

from bridge.event import CaughtEvent
from bridge.routing import (
    DEFAULT_TEMPLATE,
    RoutingKeyBuilder,
    RoutingKeyTooLong,
    encode_component,
    validate_template,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("orders", "orders"),
        ("a.b", "a%2Eb"),
        ("a*b", "a%2Ab"),
        ("a#b", "a%23b"),
        ("100%", "100%25"),
        ("a b", "a%20b"),
        ("a\tb", "a%09b"),
        ("a\nb", "a%0Ab"),
        ("a\rb", "a%0Db"),
        ("a\x0bb\x0cc", "a%0Bb%0Cc"),
        ("no\u00a0break", "no%C2%A0break"),  # Unicode white space, as UTF-8 bytes
        ("em\u2003space", "em%E2%80%83space"),
        ("nul\x00", "nul%00"),  # control characters
        ("del\x7f", "del%7F"),
        ("%2E", "%252E"),  # an already-encoded-looking value stays reversible
        ("ünïcödé", "ünïcödé"),  # non-ASCII letters are left alone
        ("", ""),
        (". * # %", "%2E%20%2A%20%23%20%25"),
    ],
)
def test_encode_component(value: str, encoded: str) -> None:
    assert encode_component(value) == encoded
    assert unquote(encoded, errors="strict") == value


def test_every_unsafe_ascii_character_is_encoded() -> None:
    value = "".join(chr(c) for c in range(128))
    encoded = encode_component(value)
    assert not set(".*# \t\r\n") & set(encoded.replace("%", ""))
    assert unquote(encoded, errors="strict") == value


@pytest.mark.parametrize(
    ("template", "key"),
    [
        (DEFAULT_TEMPLATE, "ingres.order.placed"),
        ("{database}.{owner}.{name}", "sales%2Ehq.ingres.order.placed"),
        ("dbevents.{database}.{name}", "dbevents.sales%2Ehq.order.placed"),
        ("{name}", "order.placed"),
        ("static", "static"),
        ("{{literal}}.{name}", "{literal}.order.placed"),
    ],
)
def test_templates(template: str, key: str) -> None:
    builder = RoutingKeyBuilder(template)
    # The name contains a dot that must not become a routing-key word of its own.
    assert builder.build("sales.hq", "ingres", "order.placed") == key.replace(
        "order.placed", "order%2Eplaced"
    )


def test_for_event_uses_the_event_fields() -> None:
    event = CaughtEvent("db", "own er", "ev#1", datetime(2026, 1, 1, tzinfo=UTC), None)
    assert RoutingKeyBuilder("{database}.{owner}.{name}").for_event(event) == "db.own%20er.ev%231"


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{owner}.{table}", "{table}"),
        ("{}", "positional"),
        ("{0}", "{0}"),
        ("{owner.__class__}", "{owner.__class__}"),
        ("{owner[0]}", "{owner[0]}"),
        ("{OWNER}", "{OWNER}"),
        ("{owner", "malformed"),
        ("owner}", "malformed"),
        ("{owner!r}", "conversion"),
        ("{name:>10}", "format spec"),
        ("x" * 256, "255"),
    ],
)
def test_bad_templates_are_rejected(template: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=r"routing key template|255") as info:
        validate_template(template)
    assert fragment in str(info.value)
    with pytest.raises(ValueError, match=r"routing key template|255"):
        RoutingKeyBuilder(template)


def test_unknown_placeholder_message_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"allowed: \{database\}, \{name\}, \{owner\}"):
        validate_template("{schema}")


def test_key_of_exactly_255_bytes_is_fine_256_is_too_long() -> None:
    builder = RoutingKeyBuilder("{owner}.{name}")
    assert len(builder.build("d", "o", "n" * 253)) == 255
    with pytest.raises(RoutingKeyTooLong) as info:
        builder.build("d", "o", "n" * 254)
    assert info.value.length == 256


def test_length_limit_counts_utf8_bytes_after_encoding() -> None:
    builder = RoutingKeyBuilder("{name}")
    assert builder.build("d", "o", "é" * 127) == "é" * 127  # 254 bytes
    with pytest.raises(RoutingKeyTooLong):
        builder.build("d", "o", "é" * 128)  # 256 bytes
    # 85 dots are 85 characters but 255 bytes once each becomes "%2E".
    assert len(builder.build("d", "o", "." * 85)) == 255
    with pytest.raises(RoutingKeyTooLong):
        builder.build("d", "o", "." * 86)


def test_database_counts_towards_the_limit() -> None:
    builder = RoutingKeyBuilder("{database}.{owner}.{name}")
    with pytest.raises(RoutingKeyTooLong):
        builder.build("d" * 250, "owner", "name")
