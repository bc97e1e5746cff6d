"""Routing keys for caught DBEvents, built from a configured template.

The template is a `str.format`-style string whose only placeholders are
`{database}`, `{owner}` and `{name}` (default: `{owner}.{name}`). The template's
literal text is used as written, so an operator can put dots in it on purpose
(`ingres.{database}.{owner}.{name}`).

Placeholder VALUES, on the other hand, come from Ingres and must not change
the shape of the key a topic exchange sees: a dot inside an event name would
otherwise add a routing-key word, and `*` or `#` would look like wildcards to
anyone who copies a key into a binding. So every value is percent-encoded
(UTF-8 bytes, uppercase hex) for these characters:

- `.`, `*`, `#`;
- white space (`str.isspace()`), e.g. space -> `%20`;
- control characters (Unicode category Cc), which have no place in a key;
- `%` itself -> `%25`, which makes the encoding reversible
  (`urllib.parse.unquote` gives the value back).

A key longer than 255 bytes (UTF-8), the AMQP limit, raises
`RoutingKeyTooLong` for that event only; the publisher drops and counts it.
"""

from __future__ import annotations

import string
import unicodedata

from bridge.event import CaughtEvent

DEFAULT_TEMPLATE = "{owner}.{name}"
PLACEHOLDERS = frozenset({"database", "owner", "name"})
MAX_ROUTING_KEY_BYTES = 255

_ALWAYS_ENCODED = frozenset(".*#%")


class RoutingKeyTooLong(ValueError):  # noqa: N818 - the name the design uses
    """The routing key built for one event exceeds the AMQP limit of 255 bytes."""

    def __init__(self, key: str, length: int) -> None:
        super().__init__(
            f"routing key is {length} bytes long (UTF-8), more than the AMQP limit of "
            f"{MAX_ROUTING_KEY_BYTES}: {key[:60]!r}..."
        )
        self.key = key
        self.length = length


def _needs_encoding(char: str) -> bool:
    return char in _ALWAYS_ENCODED or char.isspace() or unicodedata.category(char) == "Cc"


def encode_component(value: str) -> str:
    """Percent-encode the characters of `value` that are unsafe in a topic routing key."""
    if not any(_needs_encoding(c) for c in value):
        return value  # the common case: plain Ingres identifiers
    return "".join(
        "".join(f"%{byte:02X}" for byte in c.encode("utf-8")) if _needs_encoding(c) else c
        for c in value
    )


def _parse(template: str) -> list[tuple[str, str | None]]:
    """Split `template` into (literal, placeholder-or-None) pairs, validating it.

    Raises ValueError with a message naming the offending placeholder or the
    syntax problem.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # e.g. "Single '{' encountered in format string"
        raise ValueError(f"routing key template {template!r} is malformed: {exc}") from None
    parts: list[tuple[str, str | None]] = []
    allowed = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
    for literal, field, spec, conversion in parsed:
        if field is None:
            parts.append((literal, None))
            continue
        if field not in PLACEHOLDERS:
            shown = "{" + field + "}" if field else "{} (positional)"
            raise ValueError(
                f"routing key template {template!r} uses unknown placeholder {shown}; "
                f"allowed: {allowed}"
            )
        if spec or conversion:
            raise ValueError(
                f"routing key template {template!r}: placeholder {{{field}}} must not have "
                "a format spec or conversion (':...' or '!...')"
            )
        parts.append((literal, field))
    literal_bytes = sum(len(lit.encode("utf-8")) for lit, _ in parts)
    if literal_bytes > MAX_ROUTING_KEY_BYTES:
        raise ValueError(
            f"routing key template's fixed text alone is {literal_bytes} bytes, "
            f"more than the AMQP limit of {MAX_ROUTING_KEY_BYTES}"
        )
    return parts


def validate_template(template: str) -> None:
    """Raise ValueError (with a clear message) unless `template` is a usable template."""
    _parse(template)


_KEY_CACHE_MAX = 4096


class RoutingKeyBuilder:
    """Builds the routing key of each event from a validated template."""

    def __init__(self, template: str = DEFAULT_TEMPLATE) -> None:
        """Validate `template` (ValueError if unusable) and keep it parsed."""
        self.template = template
        self._parts = _parse(template)
        # Keys by (database, owner, name): a bridge sees a handful of events, and
        # building a key (percent-encoding, byte count) was a per-event cost.
        self._keys: dict[tuple[str, str, str], str] = {}

    def build(self, database: str, owner: str, name: str) -> str:
        """The routing key for these values; RoutingKeyTooLong if over 255 bytes."""
        values = {
            "database": encode_component(database),
            "owner": encode_component(owner),
            "name": encode_component(name),
        }
        key = "".join(lit + (values[field] if field else "") for lit, field in self._parts)
        length = len(key.encode("utf-8"))
        if length > MAX_ROUTING_KEY_BYTES:
            raise RoutingKeyTooLong(key, length)
        return key

    def for_event(self, event: CaughtEvent) -> str:
        """The routing key for a caught event; RoutingKeyTooLong if over 255 bytes."""
        ident = (event.database, event.owner, event.name)
        key = self._keys.get(ident)
        if key is None:
            key = self.build(*ident)  # RoutingKeyTooLong is not cached: it stays rare
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()  # bounded, whatever names a server sends
            self._keys[ident] = key
        return key
