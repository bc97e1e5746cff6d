"""Log output: JSON lines a log stack can parse, console lines a person can read, no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from bridge.logs import configure_logging
from bridge.masking import redact


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A stream to log into; the handler is taken off the root logger afterwards."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    out = io.StringIO()
    yield out
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_core_and_extra_fields(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream)
    logging.getLogger("bridge.catcher").info(
        "event caught %s", "ev1",
        extra={"message_id": "m-1", "event_name": "ev1", "owner": "ingres", "side": "ingres",
               "wait_seconds": 2.5},
    )
    [entry] = _lines(stream)
    assert entry["msg"] == "event caught ev1"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "bridge.catcher"
    assert entry["message_id"] == "m-1"
    assert entry["event_name"] == "ev1"
    assert entry["owner"] == "ingres"
    assert entry["side"] == "ingres"
    assert entry["wait_seconds"] == 2.5
    stamp = datetime.fromisoformat(entry["ts"])
    assert stamp.utcoffset() is not None
    assert stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_json_one_object_per_line_even_for_multiline_messages(stream: io.StringIO) -> None:
    configure_logging("debug", "json", stream)
    log = logging.getLogger("t")
    log.debug("first\nsecond")
    log.info("third")
    assert [e["msg"] for e in _lines(stream)] == ["first\nsecond", "third"]


def test_extra_cannot_shadow_logrecord_attributes(stream: io.StringIO) -> None:
    # logging itself refuses `extra={"name": ...}`: event names go in as event_name.
    configure_logging("info", "json", stream)
    with pytest.raises(KeyError, match="name"):
        logging.getLogger("t").info("x", extra={"name": "ev1"})  # noqa: G101 (the clash is what this test checks)


def test_json_carries_exception_text(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("t").exception("publish failed")
    [entry] = _lines(stream)
    assert "RuntimeError: boom" in entry["exc"]
    assert "Traceback" in entry["exc"]


def test_json_survives_values_json_does_not_know(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream)
    logging.getLogger("t").info("odd", extra={"when": datetime(2024, 5, 1), "blob": b"\x00"})  # noqa: DTZ001 (a naive time on purpose)
    [entry] = _lines(stream)
    assert entry["when"] == "2024-05-01 00:00:00"
    assert entry["blob"] == "b'\\x00'"


def test_level_is_honoured(stream: io.StringIO) -> None:
    configure_logging("WARNING", "json", stream)
    log = logging.getLogger("t")
    log.info("hidden")
    log.warning("shown")
    assert [e["msg"] for e in _lines(stream)] == ["shown"]


def test_unknown_level_and_format_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud", "json")
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("info", "xml")  # type: ignore[arg-type]


def test_reconfiguring_replaces_our_handler_only(stream: io.StringIO) -> None:
    root = logging.getLogger()
    first = io.StringIO()
    configure_logging("info", "json", first)
    configure_logging("info", "json", stream)
    logging.getLogger("t").info("once")
    assert first.getvalue() == ""
    assert [e["msg"] for e in _lines(stream)] == ["once"]
    assert sum(1 for h in root.handlers if getattr(h, "_dbevent_bridge_handler", False)) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqp://bridge:s3cret@rabbit:5672/", "amqp://bridge:***@rabbit:5672/"),
        ("AMQPS://bridge:s3cret@rabbit/vh", "AMQPS://bridge:***@rabbit/vh"),
        ("url=amqps://:only-pw@h", "url=amqps://:***@h"),
        ("raw amqp://u:p@ss@h/ end", "raw amqp://u:***@h/ end"),
        ("two amqp://a:x@h1 amqp://b:y@h2", "two amqp://a:***@h1 amqp://b:***@h2"),
        ("no password amqp://guest@h/", "no password amqp://guest@h/"),
        ("host:port amqp://h:5672/", "host:port amqp://h:5672/"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_are_redacted_everywhere(stream: io.StringIO, fmt: str) -> None:
    configure_logging("info", fmt, stream)  # type: ignore[arg-type]
    log = logging.getLogger("aiormq.connection")
    log.info("connecting to amqps://bridge:hunter2@rabbit:5671/")
    log.info("connecting to %s", "amqp://bridge:hunter2@rabbit/", extra={"url": "amqp://u:hunter2@h"})
    try:
        raise ConnectionError("cannot reach amqp://bridge:hunter2@rabbit/")
    except ConnectionError:
        log.exception("connect failed")
    output = stream.getvalue()
    assert "hunter2" not in output
    # the two messages, the extra, the exception message and its source line
    assert output.count(":***@") == 5


def test_console_is_readable(stream: io.StringIO) -> None:
    configure_logging("info", "console", stream)
    logging.getLogger("bridge.publisher").info(
        "confirmed", extra={"message_id": "m-9", "wait_seconds": 0.25}
    )
    line = stream.getvalue().strip()
    assert "INFO" in line
    assert "bridge.publisher: confirmed" in line
    assert "message_id='m-9'" in line
    assert "wait_seconds=0.25" in line
    assert not line.startswith("{")
