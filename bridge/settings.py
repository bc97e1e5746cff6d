"""The bridge's settings: one typed tree, loaded from six sources, secrets kept secret.

Sources, highest precedence first:

1. command-line options: pydantic-settings' CLI source, added to a parser by
   `add_settings_options` (`--amqp-exchange-type`, ...); what it parsed goes
   to `load_settings(cli=...)`;
2. the process environment: `BRIDGE_` prefix, `__` between levels, e.g.
   `BRIDGE_AMQP__EXCHANGE_TYPE=fanout`;
3. a `.env` file in the working directory (same names; lines without the
   `BRIDGE_` prefix are ignored, a misspelt `BRIDGE_` name is an error);
4. a secrets directory, one file per setting named like the environment
   variable (`BRIDGE_INGRES__PASSWORD`, any case): `/run/secrets` unless
   `BRIDGE_SECRETS_DIR` names another; a missing directory is fine;
5. a TOML file named by `--config PATH` or `BRIDGE_CONFIG_FILE` (tables
   `[ingres]`, `[amqp]`, `[amqp.tls]`, ...); a named file that is missing or
   not valid TOML is an error, and so is an unknown key (a typo);
6. the defaults written below.

Every problem is reported at once as a `SettingsError`, one line per problem,
naming the environment variable and the dotted path, never echoing a secret.
Passwords (Ingres password, the one inside the AMQP URL or the Ingres target)
are pydantic secrets (`SecretStr`, `Secret`): repr, str, logs and
`masked_dict()` show `***`.
"""

from __future__ import annotations

import argparse
import codecs
import difflib
import json
import os
import re
import string
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self, cast, get_args, get_origin
from urllib.parse import unquote

from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    FilePath,
    Secret,
    SecretStr,
    UrlConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    CliSettingsSource,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    NestedSecretsSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources import DefaultSettingsSource

from bridge.address import format_host_port, parse_host_port
from bridge.masking import MASK, mask_target, mask_url, target_has_credentials
from bridge.routing import validate_template

__all__ = [
    "DEFAULT_SECRETS_DIR",
    "ENV_PREFIX",
    "AmqpSettings",
    "AmqpUrl",
    "EventName",
    "HaSettings",
    "HttpSettings",
    "IngresSettings",
    "IngresTarget",
    "LogSettings",
    "QueueSettings",
    "Settings",
    "SettingsError",
    "ShutdownSettings",
    "SpoolSettings",
    "TlsSettings",
    "add_settings_options",
    "database_of",
    "env_name",
    "leaf_fields",
    "load_settings",
    "parse_event_name",
]

ENV_PREFIX = "BRIDGE_"
NESTED_DELIMITER = "__"
DEFAULT_SECRETS_DIR = Path("/run/secrets")
CONFIG_FILE_ENV = "BRIDGE_CONFIG_FILE"
SECRETS_DIR_ENV = "BRIDGE_SECRETS_DIR"

# A `[user,password]` part of a target, removed to count the parts of a dynamic node.
_CREDENTIALS_PART = re.compile(r"\[[^\],]*,[^\]]*\]")

# Appended to the description (the --help) of settings that hold a password.
_NOT_ON_COMMAND_LINES = (
    " On a command line it is visible to every user of the host: prefer the environment "
    "or a secrets file."
)

# Settings whose input must never be echoed in an error message.
_SECRET_PATHS = frozenset(
    {("ingres", "password"), ("ingres", "target"), ("ingres", "targets"),
     ("ingres", "databases"), ("amqp", "url")}
)


class SettingsError(Exception):
    """The settings are not usable; `problems` holds one line per problem.

    Each line names the setting by its environment variable and dotted path,
    e.g. ``BRIDGE_AMQP__EXCHANGE_TYPE (amqp.exchange_type): must be one of
    direct, fanout, headers, topic; got 'fnout'``. No line contains a secret.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _FieldError(ValueError):
    """A problem found by a whole-model check, pinned to one field of that model.

    Pydantic keeps the exception object in the error's context, which lets the
    renderer name the field instead of the whole section.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def env_name(path: tuple[str, ...]) -> str:
    """The environment variable of a setting path: ('amqp', 'url') → BRIDGE_AMQP__URL."""
    return ENV_PREFIX + NESTED_DELIMITER.join(part.upper() for part in path)


# --------------------------------------------------------------------------- value parsers


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_positive_duration(value: object) -> float:
    """Seconds from a number or a string like '30', '2.5s', '500ms', '2m', '1h'; must be > 0.

    Kept although pydantic parses durations: its timedelta takes ISO 8601 and
    [D ]HH:MM:SS, not the '500ms' / '2m' that the example files document, and
    every component takes seconds as a float.
    """
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        unit = (match.group(2) or "s").lower()
        seconds = float(match.group(1)) * _DURATION_UNITS[unit]
    if seconds is None or not seconds > 0 or seconds == float("inf"):
        raise ValueError(
            f"must be a positive duration in seconds, or with a unit (500ms, 2.5s, 2m, 1h); "
            f"got {value!r}"
        )
    return seconds


PositiveDuration = Annotated[float, BeforeValidator(_parse_positive_duration)]

def _one_of(choices: tuple[str, ...], *, fold: str = "lower") -> BeforeValidator:
    """A validator that accepts one of `choices` in any case and names them all when it fails."""

    def check(value: object) -> str:
        if isinstance(value, str):
            folded = value.strip().upper() if fold == "upper" else value.strip().lower()
            if folded in choices:
                return folded
        raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")

    return BeforeValidator(check)


def _empty_to_none(value: object) -> object:
    """An empty or blank string means 'not set' for optional settings."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


# --------------------------------------------------------------------------- secret-bearing strings


class IngresTarget(SecretStr):
    """An Ingres connection target; shown with the password of `[user,password]` masked.

    `get_secret_value()` gives the full target for `IIapi_connect`; `str()`,
    `repr()` and `masked` give the masked form.
    """

    def _display(self) -> str:
        return mask_target(self.get_secret_value())

    @property
    def masked(self) -> str:
        """The target with its password (if it carries one) replaced by ***."""
        return self._display()

    @property
    def has_credentials(self) -> bool:
        """Whether the target carries `[user,password]` itself."""
        return target_has_credentials(self.get_secret_value())


def _check_target(target: IngresTarget) -> IngresTarget:
    """Light checks of the three forms; messages show the target only masked."""
    text = target.get_secret_value().strip()
    if not text:
        raise ValueError("must not be empty; e.g. mydb, myvnode::mydb or @host,tcp_ip,II::mydb")
    shown = mask_target(text)
    if text.count("[") != text.count("]") or ("[" in text and not target_has_credentials(text)):
        # Not shown: with its brackets broken, the password cannot be found to mask it.
        raise ValueError("credentials must be written [user,password] (target not shown)")
    node, sep, database = text.rpartition("::")
    if sep and not node.strip():
        raise ValueError(f"has '::' but no node before it; got {shown!r}")
    if not database.strip() or database.strip() != database:
        raise ValueError(f"needs a database name (after '::' if a node is given); got {shown!r}")
    if node.startswith("@") and len(_CREDENTIALS_PART.sub("", node).split(",")) != 3:
        raise ValueError(f"a dynamic node is written @host,protocol,port; got {shown!r}")
    return IngresTarget(text)


# The broker URL: pydantic's URL type, limited to AMQP, with a host (its own
# AmqpDsn leaves the host optional, which aio-pika would then guess).
_AmqpDsn = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["amqp", "amqps"], host_required=True)]


class AmqpUrl(Secret[_AmqpDsn]):
    """The broker URL; shown with its password masked, complete via `get_secret_value()`."""

    def _display(self) -> str:
        return mask_url(str(self.get_secret_value()))


# --------------------------------------------------------------------------- event names


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


def _parse_events(value: object) -> list[str]:
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


def database_of(target: str) -> str:
    """The database a connection target names (`[vnode::]database[/server_class]`)."""
    return target.rsplit("::", 1)[-1].split("/", 1)[0].strip()


def _parse_targets(value: object) -> list[IngresTarget]:
    """A JSON list of targets (or a list from TOML), each checked like ingres.target.

    Each must name a database of its own: the database labels metrics, gap
    markers and routing keys. Messages show targets masked only.
    """
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                'must be a JSON list of targets, e.g. ["node1::sales", "node2::stock"] '
                "(value not shown: it may hold a password)"
            ) from None
    if not isinstance(value, list | tuple) or not all(
        isinstance(item, str | SecretStr) for item in value
    ):
        raise ValueError("must be a list of targets (strings)")
    targets: list[IngresTarget] = []
    seen: dict[str, str] = {}
    for item in value:
        text = item.get_secret_value() if isinstance(item, SecretStr) else item
        target = _check_target(IngresTarget(text))
        database = database_of(target.get_secret_value())
        if database in seen:
            raise ValueError(
                f"{target.masked!r} and {seen[database]!r} both name database {database!r}; "
                "each target needs a database of its own"
            )
        seen[database] = target.masked
        targets.append(target)
    return targets


# --------------------------------------------------------------------------- routing templates


_MAX_SHORTSTR = 255  # AMQP exchange names and routing keys are short strings


def _valid_routing_template(template: str) -> str:
    """The publisher's rule (`bridge.routing.validate_template`): {owner} {name} {database}.

    Unbalanced braces are caught here first, to tell the operator how to write
    a literal brace.
    """
    try:
        list(string.Formatter().parse(template))
    except ValueError:
        raise ValueError(
            f"unbalanced brace in {template!r}: placeholders are {{owner}}, {{name}}, "
            "{database}; write {{ or }} for a literal brace"
        ) from None
    validate_template(template)
    return template


def _valid_short_string(value: str) -> str:
    if len(value.encode()) > _MAX_SHORTSTR:
        raise ValueError(f"is longer than {_MAX_SHORTSTR} bytes")
    return value


# --------------------------------------------------------------------------- other checks


def _check_text_encoding(value: str) -> str:
    """A codec Python knows that turns bytes into text; normalised to its canonical name."""
    try:
        # Not b"".decode(): empty input short-circuits the lookup of the codec.
        "x".encode(value)
        return codecs.lookup(value).name
    except LookupError as exc:
        if "not a text encoding" in str(exc):
            raise ValueError(f"{value!r} is not a text encoding") from None
        raise ValueError(
            f"unknown text encoding {value!r}; use a Python codec name such as "
            "utf-8, latin-1 or cp1252"
        ) from None
    except UnicodeError:  # e.g. the 'undefined' codec, which refuses everything
        raise ValueError(f"{value!r} is not a usable text encoding") from None


_ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (the documented way to listen on every interface)
_LISTEN_OFF = frozenset({"", "off", "none", "false", "no", "disabled"})


def _parse_listen(value: object) -> str | None:
    """'HOST:PORT', '[IPv6]:PORT' or ':PORT' (all interfaces); 'off' or empty → None."""
    if value is None or value is False:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = f":{value}"
    if not isinstance(value, str):
        raise ValueError(f"must be HOST:PORT or 'off'; got {value!r}")  # noqa: TRY004 (pydantic turns ValueError, not TypeError, into a validation error)
    text = value.strip()
    if text.lower() in _LISTEN_OFF:
        return None
    try:
        host, port = parse_host_port(text, _ALL_INTERFACES)
    except ValueError:
        raise ValueError(
            f"must be HOST:PORT (e.g. 0.0.0.0:8080, [::]:8080, :9100) or 'off'; got {value!r}"
        ) from None
    return format_host_port(host, port)


ExistingFile = Annotated[FilePath | None, BeforeValidator(_empty_to_none)]


# --------------------------------------------------------------------------- the model


def _check_backoff(low: float, high: float) -> None:
    """A section's reconnect delays: the first must not exceed the longest."""
    if low > high:
        raise _FieldError(
            "reconnect_backoff_max",
            f"must not be less than reconnect_backoff_min ({low:g}s); got {high:g}s",
        )


class _Section(BaseModel):
    """Common configuration: unknown keys are errors, values never change after loading."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, hide_input_in_errors=True, validate_default=True
    )


class DatabaseSettings(_Section):
    """What differs for one database of ingres.targets: its credentials and its events.

    Unset values come from the ingres section (user, password, events).
    """

    user: Annotated[str | None, BeforeValidator(_empty_to_none)] = Field(
        default=None, description="User name for this database's connection."
    )
    password: Annotated[SecretStr | None, BeforeValidator(_empty_to_none)] = Field(
        default=None, description="Password for this database's user." + _NOT_ON_COMMAND_LINES
    )
    events: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="DBEvents to register in this database, as ingres.events."
    )

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: object) -> list[str] | None:
        return None if value is None else _parse_events(value)


def _json_object(value: object) -> object:
    """A JSON object given as text (the environment, the command line) is decoded."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                'must be a JSON object, e.g. {"stock": {"user": "reader", "events": ["low"]}} '
                "(value not shown: it may hold a password)"
            ) from None
    return value


class IngresSettings(_Section):
    """Where to catch DBEvents, which ones, and how to keep the session alive."""

    target: Annotated[
        IngresTarget | None, AfterValidator(lambda v: None if v is None else _check_target(v))
    ] = Field(
        default=None,
        description="Connection target: database, vnode::database, or "
        "@host,tcp_ip,PORT[user,password]::database. Required to run." + _NOT_ON_COMMAND_LINES,
    )
    targets: Annotated[list[IngresTarget], NoDecode] = Field(
        default_factory=list,
        description="Several databases in one process: a JSON list of targets, each as "
        "ingres.target, each on a database of its own; the same user, password and events "
        "for each. Instead of ingres.target." + _NOT_ON_COMMAND_LINES,
    )
    databases: Annotated[
        dict[str, DatabaseSettings], NoDecode, BeforeValidator(_json_object)
    ] = Field(
        default_factory=dict,
        description="Per-database user, password and events for ingres.targets, by database "
        "name (a TOML table per database, or a JSON object); unset values come from this "
        "section." + _NOT_ON_COMMAND_LINES,
    )
    user: Annotated[str | None, BeforeValidator(_empty_to_none)] = Field(
        default=None, description="User name for the connection (unless the target carries it)."
    )
    password: Annotated[SecretStr | None, BeforeValidator(_empty_to_none)] = Field(
        default=None, description="Password for `user`." + _NOT_ON_COMMAND_LINES
    )
    events: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="DBEvents to register: name or owner.name, comma-separated or a JSON "
        'list; "Quoted" names keep their case. At least one is required to run.',
    )
    reconnect_backoff_min: PositiveDuration = Field(
        default=1.0, description="First delay before reconnecting to Ingres (seconds)."
    )
    reconnect_backoff_max: PositiveDuration = Field(
        default=60.0, description="Longest delay between reconnection attempts (seconds)."
    )
    idle_probe_interval: PositiveDuration = Field(
        default=2.0,
        description="After this long without an event, probe the connection with a query "
        "(detects a half-open connection; seconds).",
    )
    probe_timeout: PositiveDuration = Field(
        default=2.0,
        description="How long the idle probe may take before the session counts as half-open "
        "and is reopened (seconds).",
    )
    operation_timeout: PositiveDuration = Field(
        default=30.0,
        description="How long one Ingres operation (connect, register, idle probe) may take "
        "before the session is treated as lost and reopened (seconds).",
    )
    delivery_delay_max: PositiveDuration = Field(
        default=5.0,
        description="Longest the DBMS may take to hand a raised event to this session (its "
        "event thread queues SHARE events some time after stamping them); a gap marker starts "
        "this much before the last event caught or the last idle probe answered (seconds).",
    )
    get_event_timeout: PositiveDuration = Field(
        default=0.5,
        description="How long one IIapi_getEvent waits before returning to check for "
        "shutdown (seconds).",
    )

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: object) -> list[IngresTarget]:
        return _parse_targets(value)

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: object) -> list[str]:
        return _parse_events(value)

    def event_names(self) -> list[EventName]:
        """The configured events, parsed (owner/name as Ingres reports them, SQL text)."""
        return [parse_event_name(text) for text in self.events]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_backoff(self.reconnect_backoff_min, self.reconnect_backoff_max)
        if self.get_event_timeout > self.idle_probe_interval:
            raise _FieldError(
                "get_event_timeout",
                f"must not exceed idle_probe_interval ({self.idle_probe_interval:g}s); "
                f"got {self.get_event_timeout:g}s",
            )
        self._check_credentials()
        return self

    def database(self, target: IngresTarget) -> IngresSettings:
        """The section as one database's catcher sees it.

        `target` alone, with that database's own user, password and events
        where it has them, else the section's. Not validated again: every value
        in it already was.
        """
        own = self.databases.get(database_of(target.get_secret_value()), DatabaseSettings())
        if own.user is not None or own.password is not None:
            user, password = own.user, own.password
        else:
            user, password = self.user, self.password
        events = own.events if own.events is not None else self.events
        return self.model_copy(update={
            "target": target, "targets": [], "databases": {},
            "user": user, "password": password, "events": events,
        })

    @property
    def database_name(self) -> str:
        """The database `target` names (metrics, gap markers and routing keys use it)."""
        return "" if self.target is None else database_of(self.target.get_secret_value())

    def per_database(self) -> list[IngresSettings]:
        """One view per database to catch from (see `database`), in the order configured."""
        return [self.database(target) for target in self.all_targets()]

    def all_targets(self) -> list[IngresTarget]:
        """The databases to catch from: `targets`, or the one `target` (none: not runnable)."""
        return list(self.targets) or ([] if self.target is None else [self.target])

    def _check_credentials(self) -> None:
        if self.target is not None and self.targets:
            raise _FieldError(
                "targets", "is set together with ingres.target; give one database as "
                "BRIDGE_INGRES__TARGET or several as BRIDGE_INGRES__TARGETS, not both",
            )
        known = {database_of(t.get_secret_value()) for t in self.all_targets()}
        for name, own in self.databases.items():
            if name not in known:
                raise _FieldError(
                    f"databases.{name}", f"no target names database {name!r}; "
                    f"the targets name: {', '.join(sorted(known)) or 'none'}",
                )
            if own.password is not None and own.user is None:
                raise _FieldError(f"databases.{name}.password", "is set but user is not")
        in_target = any(target.has_credentials for target in self.all_targets())
        if in_target and (self.user is not None or self.password is not None):
            raise _FieldError(
                "user" if self.user is not None else "password",
                "the target already carries [user,password]; give the credentials only once",
            )
        if self.password is not None and self.user is None:
            raise _FieldError("password", "is set but BRIDGE_INGRES__USER (ingres.user) is not")


class TlsSettings(_Section):
    """TLS towards the broker; used with amqps:// URLs only."""

    ca_file: ExistingFile = Field(
        default=None, description="CA bundle (PEM) to verify the broker; default: system CAs."
    )
    cert_file: ExistingFile = Field(
        default=None, description="Client certificate (PEM) for mutual TLS."
    )
    key_file: ExistingFile = Field(
        default=None, description="Private key (PEM) of cert_file, unless cert_file holds it."
    )
    verify_hostname: bool = Field(
        default=True, description="Check that the broker's certificate names its host."
    )
    server_name: Annotated[str | None, BeforeValidator(_empty_to_none)] = Field(
        default=None,
        description="Host name to send (SNI) and verify, when it differs from the URL's host.",
    )

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            raise _FieldError("key_file", "is set but cert_file is not")
        return self

    def customised(self) -> list[str]:
        """The names of the settings that differ from their defaults."""
        return [
            name
            for name, field in type(self).model_fields.items()
            if getattr(self, name) != field.default
        ]


class AmqpSettings(_Section):
    """The broker, the exchange the events go to, and how publishing behaves."""

    url: AmqpUrl = Field(
        default=AmqpUrl(AnyUrl("amqp://guest:guest@localhost:5672/")),
        description="Broker URL, amqp:// or amqps://USER:PASSWORD@HOST:PORT/VHOST."
        + _NOT_ON_COMMAND_LINES,
    )
    exchange: Annotated[str, AfterValidator(_valid_short_string)] = Field(
        default="ingres.dbevents", min_length=1, description="Exchange the events are published to."
    )
    exchange_type: Annotated[
        Literal["direct", "fanout", "headers", "topic"],
        _one_of(("direct", "fanout", "headers", "topic")),
    ] = Field(default="topic", description="Type of the exchange: direct, fanout, headers, topic.")
    declare_exchange: bool = Field(
        default=True,
        description="Declare the exchange (durable) at start; false: it must already exist.",
    )
    routing_key: Annotated[str, AfterValidator(_valid_routing_template)] = Field(
        default="{owner}.{name}",
        description="Routing key template; placeholders {owner}, {name}, {database}.",
    )
    gap_routing_key: Annotated[str, AfterValidator(_valid_short_string)] = Field(
        default="dbevent-bridge.gap",
        description="Routing key of the notices that report lost events (gaps).",
    )
    confirm_window: int = Field(
        default=256,
        gt=0,
        le=65535,
        description="Most published messages awaiting the broker's confirm at once.",
    )
    publish_timeout: PositiveDuration = Field(
        default=30.0,
        description="How long to wait for a confirm before treating the publish as failed "
        "(seconds).",
    )
    reconnect_backoff_min: PositiveDuration = Field(
        default=0.1, description="First delay before reconnecting to RabbitMQ (seconds)."
    )
    reconnect_backoff_max: PositiveDuration = Field(
        default=10.0, description="Longest delay between reconnection attempts (seconds)."
    )
    text_encoding: Annotated[str, AfterValidator(_check_text_encoding)] = Field(
        default="utf-8",
        description="Encoding of the event text (a Python codec name); bytes that do not "
        "decode are kept, never lost.",
    )
    format: Annotated[Literal["json", "cloudevents"], _one_of(("json", "cloudevents"))] = Field(
        default="json",
        description="Message body: json (the bridge's own JSON object) or cloudevents "
        "(CloudEvents 1.0, structured mode, content type application/cloudevents+json).",
    )
    tls: TlsSettings = Field(default_factory=TlsSettings)

    @property
    def url_masked(self) -> str:
        """The broker URL with its password replaced by ***: for logs and status pages."""
        return str(self.url)

    @property
    def vhost(self) -> str:
        """The virtual host the URL names (`/` when its path is empty)."""
        path = self.url.get_secret_value().path or "/"
        return unquote(path[1:]) or "/"

    @property
    def uses_tls(self) -> bool:
        """Whether the URL asks for TLS (amqps://)."""
        return str(self.url.get_secret_value()).lower().startswith("amqps://")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_backoff(self.reconnect_backoff_min, self.reconnect_backoff_max)
        if self.declare_exchange and self.exchange.startswith("amq."):
            raise _FieldError(
                "exchange",
                "names starting with 'amq.' are reserved by the broker and cannot be declared; "
                "set BRIDGE_AMQP__DECLARE_EXCHANGE=false to publish to an existing one",
            )
        customised = self.tls.customised()
        if customised and not self.uses_tls:
            raise _FieldError(
                f"tls.{customised[0]}", "applies to amqps:// URLs only, and amqp.url is amqp://"
            )
        return self


class SpoolSettings(_Section):
    """The on-disk spool that keeps caught events while the broker is unreachable."""

    enabled: bool = Field(
        default=True,
        description="Keep events on disk while the broker is away; false: memory queue only.",
    )
    path: Path = Field(
        default=Path("/var/lib/dbevent-bridge/spool.sqlite3"),
        description="SQLite file of the spool (its directory must be writable).",
    )
    max_bytes: ByteSize = Field(
        default=ByteSize(1024**3),
        gt=0,
        description="Largest size of the spool: bytes, or with a unit (512MiB, 1GB).",
    )
    full_policy: Annotated[
        Literal["block", "drop_newest", "drop_oldest"],
        _one_of(("block", "drop_newest", "drop_oldest")),
    ] = Field(
        default="block",
        description="When the spool is full: block (stop taking events from Ingres until there "
        "is room; they wait in the session's queue on the server, which discards what its "
        "event memory cannot hold, unseen by the bridge), drop_newest (discard each new "
        "event), drop_oldest (discard the oldest spooled events). Every drop is logged with "
        "the event's identity and counted in dbevent_bridge_events_dropped_total.",
    )


class QueueSettings(_Section):
    """The in-memory queue between the catcher and the publisher."""

    max_events: int = Field(
        default=10_000,
        gt=0,
        description="Most events held in memory; beyond it they go to the spool.",
    )


class ShutdownSettings(_Section):
    """How a stop request (SIGTERM) is handled."""

    drain_timeout: PositiveDuration = Field(
        default=20.0,
        description="How long to keep publishing caught events after a stop request; what "
        "remains stays in the spool (seconds).",
    )


class HaSettings(_Section):
    """Active/standby pairs: two bridges on one database, RabbitMQ decides which publishes."""

    mode: Annotated[
        Literal["off", "active-standby"], _one_of(("off", "active-standby"))
    ] = Field(
        default="off",
        description="off: this bridge publishes alone; active-standby: it pairs with the other "
        "bridges of its group, one publishing, the others standing by with what they caught.",
    )
    group: Annotated[
        str | None, BeforeValidator(_empty_to_none),
        AfterValidator(lambda v: None if v is None else _valid_short_string(v)),
    ] = Field(
        default=None,
        description="The bridges that stand in for one another (the same database and events); "
        "default: the database of ingres.target.",
    )


class HttpSettings(_Section):
    """The HTTP endpoint for health checks and Prometheus metrics."""

    listen: Annotated[str | None, BeforeValidator(_parse_listen)] = Field(
        default="0.0.0.0:8080",
        description="Address of the health/metrics endpoint, HOST:PORT; 'off' or empty: none.",
    )

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to bind, or None when the endpoint is off; an IPv6 host is unbracketed."""
        return None if self.listen is None else parse_host_port(self.listen, _ALL_INTERFACES)


class LogSettings(_Section):
    """Logging."""

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        _one_of(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), fold="upper"),
    ] = Field(default="INFO", description="Least severe level logged.")
    format: Annotated[Literal["json", "console"], _one_of(("json", "console"))] = Field(
        default="json", description="json: one JSON object per line; console: for people."
    )


# BRIDGE_ variables of the process environment that are not settings: they say
# where the settings are (read before any source), where the simulator builds,
# or which runtime version the simulator's library acts as (read by the library).
_ENVIRONMENT_ONLY = frozenset(
    {"config_file", "secrets_dir", "sim_cache_dir", "sim_max_api_version"}
)


class _UnreadableSourceError(Exception):
    """A source cannot be read at all; the message is the line to show.

    Not a ValueError: pydantic-settings wraps those in its own SettingsError,
    whose text would then be all there is to go on.
    """


class _ReadsJsonSections:
    """Names the setting and the source when a whole section given as JSON is not JSON.

    pydantic-settings reports it as a SettingsError carrying only text; this
    hook is where the field and the source are still known.
    """

    source_name = ""

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        try:
            return super().prepare_field_value(  # type: ignore[misc]
                field_name, field, value, value_is_complex
            )
        except ValueError:
            path = (field_name,)
            raise _UnreadableSourceError(_problem(
                path, f"is not valid JSON (in {self.source_name}); set each setting as "
                f"{env_name(path)}__... instead",
            )) from None


class _EnvironmentSource(_ReadsJsonSections, DotEnvSettingsSource):
    """The process environment, checked like `.env`: an unknown BRIDGE_ name is an error.

    pydantic-settings' environment source ignores names it does not know, so
    `BRIDGE_AMQP_URL` (one underscore) would be dropped in silence. Its `.env`
    source with `dotenv_filtering="match_prefix"` keeps every prefixed name,
    which `extra="forbid"` then reports with a suggestion; this source is that
    one, reading the process environment instead of a file.
    """

    source_name = "the environment"

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return EnvSettingsSource._load_env_vars(self)  # noqa: SLF001 (the dotenv source's own loader, reused for the environment)

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        return {key: value for key, value in data.items() if key not in _ENVIRONMENT_ONLY}


class _DotEnvSource(_ReadsJsonSections, DotEnvSettingsSource):
    source_name = ".env"


class _SecretsSource(_ReadsJsonSections, NestedSecretsSettingsSource):
    """One file per setting, named like its variable; a missing directory is fine."""

    source_name = "the secrets directory"

    def validate_secrets_path(self, path: Path) -> None:
        if path.exists() and not path.is_dir():
            raise _UnreadableSourceError(f"{SECRETS_DIR_ENV}: {str(path)!r} is not a directory")
        super().validate_secrets_path(path)


class Settings(BaseSettings):
    """Every setting of the bridge.

    Build it with `load_settings` (every source) or `Settings.isolated` (overrides
    and defaults only). Calling `Settings()` directly reads the environment, .env,
    the secrets directory and BRIDGE_CONFIG_FILE, but reports problems as a raw
    pydantic ValidationError, not as a SettingsError.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        dotenv_filtering="match_prefix",
        case_sensitive=False,
        secrets_dir_missing="ok",
        secrets_nested_delimiter=NESTED_DELIMITER,
        cli_implicit_flags=True,  # --amqp-declare-exchange / --no-amqp-declare-exchange
        cli_show_env_vars=True,  # each option's help names its variable
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        validate_default=True,
    )

    ingres: IngresSettings = Field(default_factory=IngresSettings)
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    ha: HaSettings = Field(default_factory=HaSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        # pydantic-settings' signature; the sources below are built by `_sources`.
        settings_cls: type[BaseSettings],  # noqa: ARG003
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """For `Settings()` called directly: the sources `load_settings` reads, minus the CLI."""
        return _sources(init_settings, None, None)

    @classmethod
    def isolated(cls, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Settings from `overrides` and the defaults only: no environment, .env, secrets or file.

        For tests and for embedding; raises SettingsError like `load_settings`.
        """
        return _build(lambda: (InitSettingsSource(Settings, dict(overrides or {})),))

    def require_events(self) -> None:
        """Raise SettingsError unless every database has an event to catch (`run` needs one).

        `check-config` and `demo` may work without events, so this is not a
        validator: the command that needs events calls it.
        """
        targets = self.ingres.all_targets()
        if not self.ingres.events and (
            not targets or any(not self.ingres.database(t).events for t in targets)
        ):
            raise SettingsError(
                [
                    _problem(
                        ("ingres", "events"),
                        "at least one event is required to run; "
                        "e.g. BRIDGE_INGRES__EVENTS=orders,dba.stock",
                    )
                ]
            )

    def require_target(self) -> None:
        """Raise SettingsError unless an Ingres target (or several) is configured."""
        if not self.ingres.all_targets():
            raise SettingsError(
                [
                    _problem(
                        ("ingres", "target"),
                        "is required to run; e.g. BRIDGE_INGRES__TARGET=myvnode::mydb",
                    )
                ]
            )

    def require_runnable(self) -> None:
        """Raise SettingsError listing what `run` needs and lacks: a target and events."""
        problems: list[str] = []
        for requirement in (self.require_target, self.require_events):
            try:
                requirement()
            except SettingsError as exc:
                problems.extend(exc.problems)
        if problems:
            raise SettingsError(problems)

    def masked_dict(self) -> dict[str, Any]:
        """The effective settings as plain data, every secret shown as *** (for check-config)."""
        return cast("dict[str, Any]", _masked(self.model_dump(mode="python")))


def _masked(value: object) -> object:
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, IngresTarget | AmqpUrl):
        return str(value)
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, Path):
        return str(value)
    return value


# --------------------------------------------------------------------------- error rendering


def _problem(path: tuple[str, ...], message: str) -> str:
    return f"{env_name(path)} ({'.'.join(path)}): {message}"


def _section_type(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _keyed_type(annotation: object) -> type[BaseModel] | None:
    """The section model of a table of sections by name (ingres.databases), else None."""
    return _section_type(get_args(annotation)[1]) if get_origin(annotation) is dict else None


def _model_at(path: tuple[str, ...]) -> type[BaseModel] | None:
    """The section model found at `path` below Settings, or None if `path` is no section.

    In a table of sections by name (ingres.databases), a name leads to its section.
    """
    model: type[BaseModel] | None = Settings
    keyed: type[BaseModel] | None = None  # the next part is a name in such a table
    for part in path:
        if keyed is not None:
            model, keyed = keyed, None
            continue
        field = model.model_fields.get(part) if model is not None else None
        annotation = field.annotation if field is not None else None
        keyed, model = _keyed_type(annotation), _section_type(annotation)
        if model is None and keyed is None:
            return None
    return None if keyed is not None else model


def _keyed_sections(path: tuple[str, ...]) -> type[BaseModel] | None:
    """The model of the values when `path` is a table of sections by name (ingres.databases)."""
    parent = _model_at(path[:-1]) if path else None
    field = parent.model_fields.get(path[-1]) if parent is not None else None
    return _keyed_type(field.annotation) if field is not None else None


def _setting_path(loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The setting an error location points at, without list indexes and union tags."""
    path: list[str] = []
    for part in loc:
        if not isinstance(part, str):
            continue
        if _keyed_sections(tuple(path)) is not None:
            path.append(part)  # a section's name, e.g. a database's
            continue
        model = _model_at(tuple(path))
        if model is None:
            break
        path.append(part)
        if part not in model.model_fields:
            break
    return tuple(path)


def _suggestion(path: tuple[str, ...]) -> tuple[str, ...] | None:
    """The known setting that `path` most likely misspells, looking below its parent.

    Names are compared flattened ('loglevel' against 'log_level'), so a
    missing level separator is recognised too.
    """
    parent, key = path[:-1], path[-1]
    candidates: dict[str, tuple[str, ...]] = {}
    for leaf, _field in leaf_fields():
        for depth in range(len(parent) + 1, len(leaf) + 1):
            if leaf[: len(parent)] == parent:
                candidates.setdefault("_".join(leaf[len(parent) : depth]), leaf[:depth])
    close = difflib.get_close_matches(key, list(candidates), n=1)
    close = close or [name for name in candidates if name.startswith(key)][:1]
    return candidates[close[0]] if close else None


def _unknown_setting(path: tuple[str, ...]) -> str:
    if path in (("config_file",), ("secrets_dir",)):
        return "is read from the process environment only, not from .env; remove it there"
    suggestion = _suggestion(path)
    if suggestion is not None:
        return f"unknown setting; did you mean {'.'.join(suggestion)} ({env_name(suggestion)})?"
    model = _model_at(path[:-1])
    known = list(model.model_fields) if model is not None else []
    return f"unknown setting; known here: {', '.join(known)}"


_SCALARS = (str, int, float, bool)


# pydantic's words for its own types, by error type, in the operator's terms.
_MESSAGES = {
    "bool_parsing": "must be true or false (also: yes/no, on/off, 1/0)",
    "byte_size": "must be a size in bytes, or with a unit (KB, MB, GB, TB: powers of 1000; "
    "KiB, MiB, GiB, TiB: powers of 1024)",
    "path_not_file": "must name an existing file",
    "url_scheme": "must start with amqp:// or amqps://",
    "url_type": "must be a valid string",
}
_MESSAGES["byte_size_unit"] = _MESSAGES["byte_size"]
# What a URL failed on (pydantic-core's `error` context: a fixed set of reasons).
_URL_REASONS = {
    "empty host": "has no host; expected amqp://USER:PASSWORD@HOST:PORT/VHOST",
    "invalid port number": "has an invalid port (expected a number 1-65535)",
    "relative URL without a base": "must start with amqp:// or amqps://",
}


def _message(error: ErrorDetails, path: tuple[str, ...]) -> str:
    kind = error["type"]
    context = error.get("ctx") or {}
    if kind == "value_error":
        return str(context.get("error", error["msg"]))
    if kind == "extra_forbidden":
        return _unknown_setting(path)
    if kind == "missing":
        return "is required"
    if kind == "url_parsing":
        reason = str(context.get("error", ""))
        return _URL_REASONS.get(reason, f"is not a valid URL: {reason}")
    message = _MESSAGES.get(kind) or re.sub(
        r"^(Input|String|List|Value) should ", "must ", error["msg"]
    )
    value = error.get("input")
    if path not in _SECRET_PATHS and isinstance(value, _SCALARS):
        message += f"; got {value!r}"
    return message


def _problems_of(exc: ValidationError) -> list[str]:
    """One line per error: ENV_NAME (dotted.path): message. Inputs of secrets are never shown."""
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        path = _setting_path(error["loc"])
        context_error = (error.get("ctx") or {}).get("error")
        if isinstance(context_error, _FieldError):
            path = (*path, *context_error.field.split("."))
        problems.append(_problem(path, _message(error, path)) if path else error["msg"])
    return problems


# --------------------------------------------------------------------------- loading


def _config_file(config_file: Path | None) -> tuple[Path | None, str]:
    """The TOML file to read (--config, else BRIDGE_CONFIG_FILE) and where it was named."""
    if config_file is not None:
        return config_file.expanduser(), "--config"
    named = os.environ.get(CONFIG_FILE_ENV, "").strip()
    return (Path(named).expanduser(), CONFIG_FILE_ENV) if named else (None, CONFIG_FILE_ENV)


def _toml_source(config_file: Path | None) -> PydanticBaseSettingsSource:
    """pydantic-settings' TOML source, with the file checks the README promises.

    The library reads a missing file (or a directory) as an empty one, which
    suits optional files; a file the operator named must exist. Its read and
    parse errors surface raw; here they become one line naming the file.
    """
    path, origin = _config_file(config_file)
    where = f"{origin}: config file {str(path)!r}"
    if path is not None and not path.exists():
        raise _UnreadableSourceError(f"{where} does not exist")
    if path is not None and path.is_dir():
        raise _UnreadableSourceError(f"{where} is a directory")
    try:
        return TomlConfigSettingsSource(Settings, toml_file=path)
    except OSError as exc:
        raise _UnreadableSourceError(f"{where} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise _UnreadableSourceError(f"{where} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages give the position only, never the text: safe to show.
        raise _UnreadableSourceError(f"{where} is not valid TOML: {exc}") from None


def _sources(
    init: PydanticBaseSettingsSource | None, cli: argparse.Namespace | None,
    config_file: Path | None,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """Every source but the defaults, highest first.

    `init` (overrides), the command line, the environment, .env, the secrets
    directory, the TOML file.
    """
    secrets_dir = os.environ.get(SECRETS_DIR_ENV, "").strip()
    sources: list[PydanticBaseSettingsSource | None] = [
        init,
        None if cli is None else _cli_source()(parsed_args=cli),
        _EnvironmentSource(Settings, env_file=None),
        _DotEnvSource(Settings),
        _SecretsSource(
            SecretsSettingsSource(Settings),
            secrets_dir=Path(secrets_dir).expanduser() if secrets_dir else DEFAULT_SECRETS_DIR,
        ),
        _toml_source(config_file),
    ]
    return tuple(source for source in sources if source is not None)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    cli: argparse.Namespace | None = None,
) -> Settings:
    """Load the settings from every source (see the module docstring).

    `cli` is what a parser given `add_settings_options` parsed; `overrides`, a
    nested mapping (for embedding and tests), wins even over it. `config_file`
    comes from `--config`; without it `BRIDGE_CONFIG_FILE` names the TOML file,
    if set. Raises SettingsError listing every problem found.
    """
    init = InitSettingsSource(Settings, dict(overrides)) if overrides else None
    return _build(lambda: _sources(init, cli, config_file))


def _build(sources: Callable[[], tuple[PydanticBaseSettingsSource, ...]]) -> Settings:
    """Settings from `sources` and the defaults; every problem as a SettingsError."""
    try:
        # BaseSettings takes _build_sources; mypy sees only the fields' signature.
        return Settings(  # type: ignore[call-arg]
            _build_sources=((*sources(), DefaultSettingsSource(Settings)), {})
        )
    except ValidationError as exc:
        problems = _problems_of(exc)
    except _UnreadableSourceError as exc:
        problems = [str(exc)]
    # Raised outside the except blocks: the ValidationError (which holds the raw
    # inputs, secrets included) must not travel along as __context__.
    raise SettingsError(problems)


# --------------------------------------------------------------------------- command line


def leaf_fields(
    model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Every leaf setting as (path, field), in declaration order: e.g. (('amqp', 'url'), ...)."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaf_fields(annotation, (*prefix, name))
        else:
            yield (*prefix, name), field


def _add_option(parser: argparse.ArgumentParser, *names: str, **kwargs: Any) -> argparse.Action:
    """How pydantic-settings' CLI source adds an option, with the README's spelling.

    The library names nested options `--amqp.exchange_type`; the bridge has
    documented `--amqp-exchange-type` from its first release, so the names are
    rewritten here (the dest, which maps a value to its setting, is unchanged).
    A whole section as JSON (`--amqp '{...}'`) stays accepted, like BRIDGE_AMQP,
    but out of the help, which lists one option per setting. Metavars name the
    setting: the library's would be Python types ("float" for a duration that
    also takes "500ms").
    """
    path = tuple(str(kwargs.get("dest", "")).split("."))
    section = _model_at(path[:-1])
    field = section.model_fields.get(path[-1]) if section is not None else None
    if _model_at(path) is not None:
        kwargs["help"] = argparse.SUPPRESS
    elif "metavar" in kwargs and field is not None and get_origin(field.annotation) is not Literal:
        kwargs["metavar"] = path[-1].upper()
    options = [name.replace(".", "-").replace("_", "-") for name in names]
    return parser.add_argument(*options, **kwargs)


def _cli_source(
    parser: argparse.ArgumentParser | None = None,
) -> CliSettingsSource[argparse.ArgumentParser]:
    """pydantic-settings' CLI source for Settings, adding its options to `parser` if given."""
    return CliSettingsSource(Settings, root_parser=parser, add_argument_method=_add_option)


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    """Add `--config PATH` and one option per setting (e.g. --amqp-exchange-type).

    The options come from pydantic-settings' CLI source; pass what `parser`
    parses to `load_settings(cli=...)`. Options not given leave the other
    sources alone; booleans have a `--no-` form.
    """
    parser.add_argument(
        "--config", type=Path, default=None, metavar="PATH",
        help=f"TOML configuration file (default: ${CONFIG_FILE_ENV}, if set)",
    )
    _cli_source(parser)
