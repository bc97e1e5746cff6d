"""DBEvent names as Ingres spells them: `EventName`, `parse_event_name`, event lists.

Regular identifiers fold to lowercase, "delimited" ones keep their case, an
owner may prefix the name. They live with the settings because they are checked
when the settings load (ingres.events); the catcher and the tools take the
parsed `EventName` to register events and to compare what Ingres reports.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import cast

_REGULAR_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_#@$]*")
_MAX_NAME_BYTES = 32  # Ingres limit for event and owner names


@dataclass(frozen=True, slots=True)
class EventName:
    """One configured DBEvent: its owner (None = the session's default) and name.

    `owner` and `name` are as Ingres reports them on a caught event (regular
    identifiers folded to lowercase; delimited ones as written, without quotes),
    ready to compare with `ce_eventOwner` / `ce_eventName`. `sql` is the text to
    put after REGISTER DBEVENT, with delimited parts quoted again.
    """

    owner: str | None
    name: str
    owner_delimited: bool = False
    name_delimited: bool = False

    @property
    def sql(self) -> str:
        """The name as SQL text, e.g. owner.name or "Owner"."My Event"."""
        name = _quote(self.name) if self.name_delimited else self.name
        if self.owner is None:
            return name
        owner = _quote(self.owner) if self.owner_delimited else self.owner
        return f"{owner}.{name}"

    def __str__(self) -> str:
        return self.sql


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _split_unquoted(text: str, separator: str) -> list[str]:
    """Split at `separator` outside double quotes ('""' inside quotes toggles twice: harmless)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _parse_identifier(raw: str, whole: str) -> tuple[str, bool]:
    """One identifier → (name as Ingres stores it, delimited?); ValueError names `whole`."""
    text = raw.strip()
    if text.startswith('"'):
        inner = text[1:-1] if len(text) >= 2 and text.endswith('"') else None
        if inner is None or '"' in inner.replace('""', ""):
            raise ValueError(f"{whole!r} has unbalanced double quotes")
        name = inner.replace('""', '"').rstrip()  # Ingres ignores trailing blanks
        if not name or any(ord(char) < 32 or ord(char) == 127 for char in name):
            raise ValueError(f"{whole!r} has an empty or unprintable quoted name")
        delimited = True
    elif _REGULAR_IDENTIFIER.fullmatch(text):
        name, delimited = text.lower(), False
    else:
        raise ValueError(
            f"{whole!r} is not a valid event name: a name starts with a letter or _ and holds "
            "only letters, digits, _, #, @ and $ (put any other name in double quotes)"
        )
    if len(name.encode()) > _MAX_NAME_BYTES:
        raise ValueError(f"{whole!r} is longer than {_MAX_NAME_BYTES} bytes")
    return name, delimited


def parse_event_name(text: str) -> EventName:
    """Parse `name` or `owner.name` (each part regular or "delimited"); ValueError if invalid."""
    parts = _split_unquoted(text.strip(), ".")
    if len(parts) > 2:
        raise ValueError(f"{text.strip()!r} has too many dots: write name or owner.name")
    name, name_delimited = _parse_identifier(parts[-1], text.strip())
    if len(parts) == 1:
        return EventName(None, name, name_delimited=name_delimited)
    owner, owner_delimited = _parse_identifier(parts[0], text.strip())
    return EventName(owner, name, owner_delimited, name_delimited)


def _event_items(value: object) -> list[str]:
    """The raw items of an event list: a list, a JSON list, or a comma-separated string."""
    if isinstance(value, list | tuple):
        if not all(isinstance(item, str) for item in value):
            raise ValueError("must be a list of names (strings)")
        return list(cast("list[str]", value))
    if not isinstance(value, str):
        raise ValueError("must be a list of names, or names separated by commas")  # noqa: TRY004 (pydantic turns ValueError, not TypeError, into a validation error)
    text = value.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"starts with '[' but is not a JSON list: {exc}") from None
        return _event_items(decoded if isinstance(decoded, list) else None)
    items = _split_unquoted(text, ",")
    for position, item in enumerate(items, 1):
        if not item.strip():
            raise ValueError(f"item {position} of {len(items)} is empty (a stray comma?)")
    return items


def parse_events(value: object) -> list[str]:
    """Validate the event list; keep each name in its canonical SQL spelling."""
    events: list[str] = []
    seen: dict[tuple[str | None, str], str] = {}
    for item in _event_items(value):
        event = parse_event_name(item)
        key = (event.owner, event.name)
        if key in seen:
            raise ValueError(f"{item.strip()!r} is listed twice (first as {seen[key]!r})")
        seen[key] = item.strip()
        events.append(event.sql)
    return events

