"""The settings tree: `Settings` and its sections, one model per TOML table.

Each field carries its default, its description (the --help text) and its
checks; checks across fields raise `FieldError` so the message names the field.
Each component takes its own section (the catcher `IngresSettings`, the
publisher `AmqpSettings`, ...). How a `Settings` is filled: loading.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, cast
from urllib.parse import unquote

from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bridge.address import parse_host_port
from bridge.masking import MASK
from bridge.settings.errors import (
    ENV_PREFIX,
    NESTED_DELIMITER,
    FieldError,
    SettingsError,
    problem,
)
from bridge.settings.event_names import EventName, parse_event_name, parse_events
from bridge.settings.sources import (
    build,
    source_plan,
)
from bridge.settings.values import (
    ALL_INTERFACES,
    AmqpUrl,
    ExistingFile,
    IngresTarget,
    PositiveDuration,
    check_target,
    check_text_encoding,
    database_of,
    empty_to_none,
    json_object,
    one_of,
    parse_listen,
    parse_targets,
    valid_routing_template,
    valid_short_string,
)

# Appended to the description (the --help) of settings that hold a password.
_NOT_ON_COMMAND_LINES = (
    " On a command line it is visible to every user of the host: prefer the environment "
    "or a secrets file."
)


def _check_backoff(low: float, high: float) -> None:
    """A section's reconnect delays: the first must not exceed the longest."""
    if low > high:
        raise FieldError(
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

    user: Annotated[str | None, BeforeValidator(empty_to_none)] = Field(
        default=None, description="User name for this database's connection."
    )
    password: Annotated[SecretStr | None, BeforeValidator(empty_to_none)] = Field(
        default=None, description="Password for this database's user." + _NOT_ON_COMMAND_LINES
    )
    events: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="DBEvents to register in this database, as ingres.events."
    )

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: object) -> list[str] | None:
        return None if value is None else parse_events(value)


class IngresSettings(_Section):
    """Where to catch DBEvents, which ones, and how to keep the session alive."""

    target: Annotated[
        IngresTarget | None, AfterValidator(lambda v: None if v is None else check_target(v))
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
        dict[str, DatabaseSettings], NoDecode, BeforeValidator(json_object)
    ] = Field(
        default_factory=dict,
        description="Per-database user, password and events for ingres.targets, by database "
        "name (a TOML table per database, or a JSON object); unset values come from this "
        "section." + _NOT_ON_COMMAND_LINES,
    )
    user: Annotated[str | None, BeforeValidator(empty_to_none)] = Field(
        default=None, description="User name for the connection (unless the target carries it)."
    )
    password: Annotated[SecretStr | None, BeforeValidator(empty_to_none)] = Field(
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
        return parse_targets(value)

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: object) -> list[str]:
        return parse_events(value)

    def event_names(self) -> list[EventName]:
        """The configured events, parsed (owner/name as Ingres reports them, SQL text)."""
        return [parse_event_name(text) for text in self.events]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_backoff(self.reconnect_backoff_min, self.reconnect_backoff_max)
        if self.get_event_timeout > self.idle_probe_interval:
            raise FieldError(
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
            raise FieldError(
                "targets", "is set together with ingres.target; give one database as "
                "BRIDGE_INGRES__TARGET or several as BRIDGE_INGRES__TARGETS, not both",
            )
        known = {database_of(t.get_secret_value()) for t in self.all_targets()}
        for name, own in self.databases.items():
            if name not in known:
                raise FieldError(
                    f"databases.{name}", f"no target names database {name!r}; "
                    f"the targets name: {', '.join(sorted(known)) or 'none'}",
                )
            if own.password is not None and own.user is None:
                raise FieldError(f"databases.{name}.password", "is set but user is not")
        in_target = any(target.has_credentials for target in self.all_targets())
        if in_target and (self.user is not None or self.password is not None):
            raise FieldError(
                "user" if self.user is not None else "password",
                "the target already carries [user,password]; give the credentials only once",
            )
        if self.password is not None and self.user is None:
            raise FieldError("password", "is set but BRIDGE_INGRES__USER (ingres.user) is not")


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
    server_name: Annotated[str | None, BeforeValidator(empty_to_none)] = Field(
        default=None,
        description="Host name to send (SNI) and verify, when it differs from the URL's host.",
    )

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            raise FieldError("key_file", "is set but cert_file is not")
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
    exchange: Annotated[str, AfterValidator(valid_short_string)] = Field(
        default="ingres.dbevents", min_length=1, description="Exchange the events are published to."
    )
    exchange_type: Annotated[
        Literal["direct", "fanout", "headers", "topic"],
        one_of(("direct", "fanout", "headers", "topic")),
    ] = Field(default="topic", description="Type of the exchange: direct, fanout, headers, topic.")
    declare_exchange: bool = Field(
        default=True,
        description="Declare the exchange (durable) at start; false: it must already exist.",
    )
    routing_key: Annotated[str, AfterValidator(valid_routing_template)] = Field(
        default="{owner}.{name}",
        description="Routing key template; placeholders {owner}, {name}, {database}.",
    )
    gap_routing_key: Annotated[str, AfterValidator(valid_short_string)] = Field(
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
    text_encoding: Annotated[str, AfterValidator(check_text_encoding)] = Field(
        default="utf-8",
        description="Encoding of the event text (a Python codec name); bytes that do not "
        "decode are kept, never lost.",
    )
    format: Annotated[Literal["json", "cloudevents"], one_of(("json", "cloudevents"))] = Field(
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
            raise FieldError(
                "exchange",
                "names starting with 'amq.' are reserved by the broker and cannot be declared; "
                "set BRIDGE_AMQP__DECLARE_EXCHANGE=false to publish to an existing one",
            )
        customised = self.tls.customised()
        if customised and not self.uses_tls:
            raise FieldError(
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
        one_of(("block", "drop_newest", "drop_oldest")),
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
        Literal["off", "active-standby"], one_of(("off", "active-standby"))
    ] = Field(
        default="off",
        description="off: this bridge publishes alone; active-standby: it pairs with the other "
        "bridges of its group, one publishing, the others standing by with what they caught.",
    )
    group: Annotated[
        str | None, BeforeValidator(empty_to_none),
        AfterValidator(lambda v: None if v is None else valid_short_string(v)),
    ] = Field(
        default=None,
        description="The bridges that stand in for one another (the same database and events); "
        "default: the database of ingres.target.",
    )


class HttpSettings(_Section):
    """The HTTP endpoint for health checks and Prometheus metrics."""

    listen: Annotated[str | None, BeforeValidator(parse_listen)] = Field(
        default="0.0.0.0:8080",
        description="Address of the health/metrics endpoint, HOST:PORT; 'off' or empty: none.",
    )

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to bind, or None when the endpoint is off; an IPv6 host is unbracketed."""
        return None if self.listen is None else parse_host_port(self.listen, ALL_INTERFACES)


class LogSettings(_Section):
    """Logging."""

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        one_of(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), fold="upper"),
    ] = Field(default="INFO", description="Least severe level logged.")
    format: Annotated[Literal["json", "console"], one_of(("json", "console"))] = Field(
        default="json", description="json: one JSON object per line; console: for people."
    )


# BRIDGE_ variables of the process environment that are not settings: they say
# where the settings are (read before any source), where the simulator builds,
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
        # pydantic-settings' signature; the sources below are built by `source_plan`.
        settings_cls: type[BaseSettings],  # noqa: ARG003
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """For `Settings()` called directly: the sources `load_settings` reads, minus the CLI."""
        return source_plan(cls, init_settings, None, None)

    @classmethod
    def isolated(cls, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Settings from `overrides` and the defaults only: no environment, .env, secrets or file.

        For tests and for embedding; raises SettingsError like `load_settings`.
        """
        return build(cls, lambda: (InitSettingsSource(cls, dict(overrides or {})),))

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
                    problem(
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
                    problem(
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


