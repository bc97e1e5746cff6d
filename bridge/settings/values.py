"""How single values are read and checked, whatever setting they belong to.

Durations ('500ms', '2m'), one-of choices, listen addresses, text encodings,
routing templates and short strings, lists of Ingres targets, and the
secret-bearing strings (`IngresTarget`, `AmqpUrl`) that show themselves masked.
Each is a pydantic type or validator that the section models (sections.py)
put on their fields.
"""

from __future__ import annotations

import codecs
import json
import re
import string
from typing import Annotated

from pydantic import (
    AnyUrl,
    BeforeValidator,
    FilePath,
    Secret,
    SecretStr,
    UrlConstraints,
)

from bridge.address import format_host_port, parse_host_port
from bridge.masking import mask_target, mask_url, target_has_credentials
from bridge.routing import validate_template

# A `[user,password]` part of a target, removed to count the parts of a dynamic node.
_CREDENTIALS_PART = re.compile(r"\[[^\],]*,[^\]]*\]")

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


def one_of(choices: tuple[str, ...], *, fold: str = "lower") -> BeforeValidator:
    """A validator that accepts one of `choices` in any case and names them all when it fails."""

    def check(value: object) -> str:
        if isinstance(value, str):
            folded = value.strip().upper() if fold == "upper" else value.strip().lower()
            if folded in choices:
                return folded
        raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")

    return BeforeValidator(check)


def empty_to_none(value: object) -> object:
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


def check_target(target: IngresTarget) -> IngresTarget:
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


def database_of(target: str) -> str:
    """The database a connection target names (`[vnode::]database[/server_class]`)."""
    return target.rsplit("::", 1)[-1].split("/", 1)[0].strip()


def parse_targets(value: object) -> list[IngresTarget]:
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
        target = check_target(IngresTarget(text))
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


def valid_routing_template(template: str) -> str:
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


def valid_short_string(value: str) -> str:
    """An AMQP short string: at most 255 bytes (exchange names, routing keys)."""
    if len(value.encode()) > _MAX_SHORTSTR:
        raise ValueError(f"is longer than {_MAX_SHORTSTR} bytes")
    return value


# --------------------------------------------------------------------------- other checks


def check_text_encoding(value: str) -> str:
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


ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (the documented way to listen on every interface)
_LISTEN_OFF = frozenset({"", "off", "none", "false", "no", "disabled"})


def parse_listen(value: object) -> str | None:
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
        host, port = parse_host_port(text, ALL_INTERFACES)
    except ValueError:
        raise ValueError(
            f"must be HOST:PORT (e.g. 0.0.0.0:8080, [::]:8080, :9100) or 'off'; got {value!r}"
        ) from None
    return format_host_port(host, port)


ExistingFile = Annotated[FilePath | None, BeforeValidator(empty_to_none)]


def json_object(value: object) -> object:
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

