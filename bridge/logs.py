"""Logging set-up: one JSON object per line for log stacks, or a readable console format.

Built on the standard `logging` module, so every library's log records (aio-pika,
aiormq, asyncio) come out in the same format. The JSON formatter is a small class
of our own rather than python-json-logger: what we need (fixed key names, an
ISO-8601 UTC time stamp, `extra` fields passed through, a safe fallback for odd
values) is a few lines, and a dependency would not make those lines shorter.

Secrets: `RedactingFilter` hides the password of any `scheme://user:password@`
URL in messages, `extra` values and exception text, because a broker URL ends up
in an error message sooner or later (a failed connect, a `repr` of a setting).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import stamina

from bridge.masking import redact

__all__ = [
    "ConsoleFormatter",
    "JsonFormatter",
    "RedactingFilter",
    "configure_logging",
]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)

# Marks the handler this module installed, so configure_logging can be called
# again (tests, reloads) without stacking handlers or removing anyone else's.
_HANDLER_MARK = "_dbevent_bridge_handler"


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller passed with `extra=`, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class RedactingFilter(logging.Filter):
    """Hides URL passwords in a record's message, `extra` strings and exception text.

    Installed on the handler (not a logger) so that it sees the records of every
    logger, libraries included. It renders the message once (`msg % args`), since
    a secret may sit in an argument rather than in the format string.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops a record."""
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in _extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and not record.exc_text:
            # Formatter.format() reuses exc_text when set, so caching the redacted
            # traceback here is what keeps the secret out of the output.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _utc_iso(created: float) -> str:
    """ISO-8601 time stamp in UTC with millisecond precision, e.g. 2024-05-01T12:00:00.123Z."""
    stamp = datetime.fromtimestamp(created, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The record's traceback text (cached on the record), or None without one."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, `extra` fields, exc, stack."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a single line of JSON."""
        entry: dict[str, Any] = {
            "ts": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extra_fields(record).items():
            entry.setdefault(key, value)  # an extra never overwrites a core key
        exc = _exception_text(self, record)
        if exc:
            entry["exc"] = exc
        if record.stack_info:
            entry["stack"] = record.stack_info
        # default=str: an odd `extra` value (a Path, a datetime) must never cost
        # us the log line; ensure_ascii=False keeps non-ASCII event names legible.
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """Readable lines: `time LEVEL logger: message key=value ...`, traceback below."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record for a person at a terminal."""
        parts = [
            _utc_iso(record.created),
            f"{record.levelname:<7}",
            f"{record.name}:",
            record.getMessage(),
        ]
        parts += [f"{k}={v!r}" for k, v in _extra_fields(record).items()]
        line = " ".join(parts)
        exc = _exception_text(self, record)
        if exc:
            line = f"{line}\n{exc}"
        if record.stack_info:
            line = f"{line}\n{record.stack_info}"
        return line


def _parse_level(level: str) -> int:
    """Map 'debug'/'INFO'/... to the logging constant; refuse anything else."""
    value = logging.getLevelNamesMapping().get(level.strip().upper())
    if value is None:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning, error, critical")
    return value


def configure_logging(
    level: str,
    fmt: Literal["json", "console"],
    stream: TextIO | None = None,
) -> None:
    """Send every log record at `level` or above to `stream` (stderr by default) as `fmt`.

    Calling it again replaces the handler it installed before; handlers that
    others put on the root logger (pytest's capture, for one) are left alone.
    """
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    elif fmt == "console":
        formatter = ConsoleFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}; use json or console")
    root = logging.getLogger()
    root.setLevel(_parse_level(level))
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    # Each retrying site logs its own retries, with the reason and at a rate an
    # operator can read (the catcher retries a refused connect five times a
    # second); stamina's default hooks would log every retry at WARNING, and
    # count each retry number as a label of its own in the global Prometheus
    # registry, which the bridge does not serve (it has its own: bridge.metrics).
    stamina.instrumentation.set_on_retry_hooks(())
