"""Settings: sources and their precedence, parsing, error messages, secret masking, CLI."""

from __future__ import annotations

import argparse
import itertools
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bridge.settings import (
    EventName,
    Settings,
    SettingsError,
    add_settings_options,
    env_name,
    leaf_fields,
    load_settings,
    parse_event_name,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
EXAMPLE_TOML = CONFIG_DIR / "bridge.example.toml"
EXAMPLE_ENV = CONFIG_DIR / "bridge.example.env"
PASSWORD = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No BRIDGE_ variable from outside, a fresh working directory, a private secrets dir."""
    for name in list(os.environ):
        if name.upper().startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "secrets"))
    return tmp_path


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="dbevent-bridge")
    add_settings_options(result)
    return result


def _settings_from(ns: argparse.Namespace) -> Settings:
    """What `dbevent-bridge` loads for a parsed command line (bridge.cli._settings)."""
    return load_settings(config_file=ns.config, cli=ns)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def write_secret(tmp_path: Path, name: str, value: str) -> None:
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / name).write_text(value + "\n")


def problems_of(
    overrides: dict[str, Any] | None = None, config_file: Path | None = None
) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(overrides, config_file)
    return caught.value.problems


# --------------------------------------------------------------------------- sources


def test_defaults_when_nothing_is_configured() -> None:
    settings = load_settings()
    assert settings.ingres.target is None
    assert settings.ingres.events == []
    assert settings.amqp.exchange == "ingres.dbevents"
    assert settings.amqp.exchange_type == "topic"
    assert settings.amqp.routing_key == "{owner}.{name}"
    assert settings.amqp.gap_routing_key == "dbevent-bridge.gap"
    assert settings.amqp.declare_exchange is True
    assert settings.amqp.text_encoding == "utf-8"
    assert settings.amqp.tls.verify_hostname is True
    assert settings.spool.path == Path("/var/lib/dbevent-bridge/spool.sqlite3")
    assert settings.spool.enabled is True
    assert settings.spool.max_bytes == 2**30
    assert settings.spool.full_policy == "block"
    assert settings.http.address == ("0.0.0.0", 8080)
    assert (settings.log.level, settings.log.format) == ("INFO", "json")


def test_each_source_alone_sets_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = write_toml(tmp_path, '[amqp]\nexchange = "from.toml"\n')
    assert load_settings(config_file=toml).amqp.exchange == "from.toml"
    toml.unlink()

    write_secret(tmp_path, "BRIDGE_AMQP__EXCHANGE", "from.secrets")
    assert load_settings().amqp.exchange == "from.secrets"
    (tmp_path / "secrets" / "BRIDGE_AMQP__EXCHANGE").unlink()

    (tmp_path / ".env").write_text("BRIDGE_AMQP__EXCHANGE=from.dotenv\n")
    assert load_settings().amqp.exchange == "from.dotenv"
    (tmp_path / ".env").unlink()

    monkeypatch.setenv("BRIDGE_AMQP__EXCHANGE", "from.env")
    assert load_settings().amqp.exchange == "from.env"
    monkeypatch.delenv("BRIDGE_AMQP__EXCHANGE")

    ns = parser().parse_args(["--amqp-exchange", "from.cli"])
    assert _settings_from(ns).amqp.exchange == "from.cli"

    assert load_settings({"amqp": {"exchange": "from.init"}}).amqp.exchange == "from.init"


SOURCES = ["init", "cli", "env", "dotenv", "secrets", "toml", "default"]


def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: list[str]) -> Settings:
    """Set amqp.exchange in each of `sources` to 'from.<source>' and load.

    'init' is the overrides of `load_settings` (embedding, tests); 'cli' a parsed command line.
    """
    toml = None
    if "toml" in sources:
        toml = write_toml(tmp_path, '[amqp]\nexchange = "from.toml"\n')
    if "secrets" in sources:
        write_secret(tmp_path, "bridge_amqp__exchange", "from.secrets")  # any case works
    if "dotenv" in sources:
        (tmp_path / ".env").write_text("BRIDGE_AMQP__EXCHANGE=from.dotenv\n")
    if "env" in sources:
        monkeypatch.setenv("BRIDGE_AMQP__EXCHANGE", "from.env")
    overrides = {"amqp": {"exchange": "from.init"}} if "init" in sources else None
    args = ["--amqp-exchange", "from.cli"] if "cli" in sources else []
    return load_settings(overrides, toml, parser().parse_args(args))


@pytest.mark.parametrize(("higher", "lower"), list(itertools.pairwise(SOURCES)), ids=str)
def test_precedence_of_each_adjacent_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, higher: str, lower: str
) -> None:
    present = [higher] if lower == "default" else [higher, lower]
    settings = configure(tmp_path, monkeypatch, present)
    assert settings.amqp.exchange == f"from.{higher}"


@pytest.mark.parametrize("top", SOURCES[:-1])
def test_precedence_with_every_lower_source_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, top: str
) -> None:
    settings = configure(tmp_path, monkeypatch, SOURCES[SOURCES.index(top) :])
    assert settings.amqp.exchange == f"from.{top}"


def test_sources_merge_setting_by_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = write_toml(
        tmp_path, '[amqp]\nexchange = "t.ex"\nconfirm_window = 7\n[log]\nlevel = "debug"\n'
    )
    write_secret(tmp_path, "BRIDGE_AMQP__URL", f"amqp://bridge:{PASSWORD}@mq:5672/prod")
    (tmp_path / ".env").write_text("BRIDGE_LOG__FORMAT=console\nUNRELATED=1\n")
    monkeypatch.setenv("BRIDGE_AMQP__EXCHANGE_TYPE", "fanout")
    settings = load_settings({"amqp": {"confirm_window": 9}}, toml)
    assert settings.amqp.exchange == "t.ex"
    assert settings.amqp.confirm_window == 9
    assert settings.amqp.exchange_type == "fanout"
    assert str(settings.amqp.url.get_secret_value()) == f"amqp://bridge:{PASSWORD}@mq:5672/prod"
    assert (settings.log.level, settings.log.format) == ("DEBUG", "console")


def test_config_file_from_environment_and_command_line_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = write_toml(tmp_path, '[amqp]\nexchange = "env.file"\n')
    from_cli = tmp_path / "other.toml"
    from_cli.write_text('[amqp]\nexchange = "cli.file"\n')
    monkeypatch.setenv("BRIDGE_CONFIG_FILE", str(from_env))
    assert load_settings().amqp.exchange == "env.file"
    assert load_settings(config_file=from_cli).amqp.exchange == "cli.file"


def test_missing_secrets_directory_is_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # filterwarnings=error: a warning about the missing directory would fail this test.
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "no" / "such" / "dir"))
    assert load_settings().amqp.exchange == "ingres.dbevents"


def test_secrets_path_that_is_a_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "afile"))
    assert problems_of() == [f"BRIDGE_SECRETS_DIR: '{tmp_path / 'afile'}' is not a directory"]


def test_password_from_secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_secret(tmp_path, "BRIDGE_INGRES__PASSWORD", PASSWORD)
    monkeypatch.setenv("BRIDGE_INGRES__USER", "bridge")
    settings = load_settings()
    assert settings.ingres.password is not None
    assert settings.ingres.password.get_secret_value() == PASSWORD


def test_dotenv_ignores_unprefixed_names_but_rejects_misspelt_bridge_names(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text("PATH_EXTRA=1\nLOG__LEVEL=debug\n")
    assert load_settings().log.level == "INFO"
    (tmp_path / ".env").write_text("BRIDGE_LOG__LEVLE=debug\nBRIDGE_LOGLEVEL=debug\n")
    assert problems_of() == [
        ("BRIDGE_LOG__LEVLE (log.levle): unknown setting; did you mean log.level "
        "(BRIDGE_LOG__LEVEL)?"),
        "BRIDGE_LOGLEVEL (loglevel): unknown setting; did you mean log.level (BRIDGE_LOG__LEVEL)?",
    ]


def test_environment_rejects_misspelt_bridge_names_like_dotenv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH_EXTRA", "1")
    monkeypatch.setenv("BRIDGE_AMQP_URL", "amqp://u:pw@h/")
    monkeypatch.setenv("BRIDGE_FOO", "1")
    monkeypatch.setenv("BRIDGE_AMQP__EXCHANGE_TYP", "fanout")
    assert sorted(problems_of()) == [
        "BRIDGE_AMQP_URL (amqp_url): unknown setting; did you mean amqp.url (BRIDGE_AMQP__URL)?",
        ("BRIDGE_AMQP__EXCHANGE_TYP (amqp.exchange_typ): unknown setting; did you mean "
        "amqp.exchange_type (BRIDGE_AMQP__EXCHANGE_TYPE)?"),
        ("BRIDGE_FOO (foo): unknown setting; known here: ingres, amqp, spool, queue, shutdown, "
        "ha, http, log"),
    ]


def test_environment_only_bridge_variables_are_not_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BRIDGE_CONFIG_FILE", str(write_toml(tmp_path, "[queue]\nmax_events=5\n")))
    monkeypatch.setenv("BRIDGE_SIM_CACHE_DIR", str(tmp_path / "cache"))
    assert load_settings().queue.max_events == 5


def test_config_file_variable_in_dotenv_is_explained(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BRIDGE_CONFIG_FILE=/etc/bridge.toml\n")
    assert problems_of() == [
        ("BRIDGE_CONFIG_FILE (config_file): is read from the process environment only, "
        "not from .env; remove it there")
    ]


def test_isolated_settings_ignore_every_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_AMQP__EXCHANGE", "from.env")
    (tmp_path / ".env").write_text("BRIDGE_LOG__LEVEL=debug\n")
    monkeypatch.setenv("BRIDGE_CONFIG_FILE", str(write_toml(tmp_path, "[queue]\nmax_events=5\n")))
    settings = Settings.isolated({"spool": {"enabled": False}})
    assert settings.amqp.exchange == "ingres.dbevents"
    assert settings.log.level == "INFO"
    assert settings.queue.max_events == 10_000
    assert settings.spool.enabled is False
    with pytest.raises(SettingsError) as caught:
        Settings.isolated({"queue": {"max_events": 0}})
    assert caught.value.problems == [
        "BRIDGE_QUEUE__MAX_EVENTS (queue.max_events): must be greater than 0; got 0"
    ]


# --------------------------------------------------------------------------- events


@pytest.mark.parametrize(
    "raw",
    [
        "a,b, owner.c",
        '["a", "B", "owner.c"]',
        " A , b ,OWNER.C ",
    ],
)
def test_events_as_comma_separated_or_json_list(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("BRIDGE_INGRES__EVENTS", raw)
    assert load_settings().ingres.events == ["a", "b", "owner.c"]


def test_events_from_toml_array_and_delimited_names(tmp_path: Path) -> None:
    toml = write_toml(
        tmp_path, "[ingres]\nevents = ['Order_Changed', '\"Stock\".\"Low, Level\"', 'x#1@$']\n"
    )
    settings = load_settings(config_file=toml)
    assert settings.ingres.events == ["order_changed", '"Stock"."Low, Level"', "x#1@$"]
    assert settings.ingres.event_names() == [
        EventName(None, "order_changed"),
        EventName("Stock", "Low, Level", owner_delimited=True, name_delimited=True),
        EventName(None, "x#1@$"),
    ]


def test_event_name_parsing() -> None:
    event = parse_event_name('Sales."Big ""Deal"""')
    assert (event.owner, event.name) == ("sales", 'Big "Deal"')
    assert event.sql == 'sales."Big ""Deal"""'
    assert str(parse_event_name("  _Orders ")) == "_orders"


def test_empty_events_are_allowed_until_run_needs_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGRES__EVENTS", "")
    settings = load_settings()
    assert settings.ingres.events == []
    with pytest.raises(SettingsError) as caught:
        settings.require_runnable()
    assert caught.value.problems == [
        ("BRIDGE_INGRES__TARGET (ingres.target): is required to run; "
        "e.g. BRIDGE_INGRES__TARGET=myvnode::mydb"),
        ("BRIDGE_INGRES__EVENTS (ingres.events): at least one event is required to run; "
        "e.g. BRIDGE_INGRES__EVENTS=orders,dba.stock"),
    ]
    monkeypatch.setenv("BRIDGE_INGRES__EVENTS", "orders")
    monkeypatch.setenv("BRIDGE_INGRES__TARGET", "db")
    runnable = load_settings()
    runnable.require_events()
    runnable.require_runnable()
    assert runnable.ingres.events == ["orders"]


# --------------------------------------------------------------------------- value parsing


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1048576", 1048576),
        ("512MiB", 512 * 2**20),
        ("512 mib", 512 * 2**20),
        ("1GB", 10**9),
        ("1gib", 2**30),
        ("1.5GiB", 3 * 2**29),
        ("10k", 10_000),
        ("64KiB", 65536),
        ("2TB", 2 * 10**12),
        ("1_000_000", 10**6),
    ],
)
def test_byte_sizes(monkeypatch: pytest.MonkeyPatch, raw: str, expected: int) -> None:
    monkeypatch.setenv("BRIDGE_SPOOL__MAX_BYTES", raw)
    assert load_settings().spool.max_bytes == expected


def test_byte_size_as_toml_integer(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "[spool]\nmax_bytes = 4096\n")
    assert load_settings(config_file=toml).spool.max_bytes == 4096
    toml = write_toml(tmp_path, '[spool]\nmax_bytes = "512MiB"\n')
    assert load_settings(config_file=toml).spool.max_bytes == 512 * 2**20


@pytest.mark.parametrize(
    "url",
    ["amqp://u:p%40ss@mq:5672/prod%2Fv", "amqps://mq.example.com/", "amqp://rabbit",
     "amqp://guest:guest@[::1]:5672/"],
)
def test_amqp_urls_are_kept_as_written(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    # Percent-escapes in the password and the vhost reach the client unchanged.
    monkeypatch.setenv("BRIDGE_AMQP__URL", url)
    assert str(load_settings().amqp.url.get_secret_value()) == url


@pytest.mark.parametrize(
    ("raw", "seconds"), [("5", 5.0), ("2.5", 2.5), ("500ms", 0.5), ("3s", 3.0), ("2m", 120.0)]
)
def test_durations(monkeypatch: pytest.MonkeyPatch, raw: str, seconds: float) -> None:
    monkeypatch.setenv("BRIDGE_AMQP__PUBLISH_TIMEOUT", raw)
    assert load_settings().amqp.publish_timeout == seconds


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        (":9100", ("0.0.0.0", 9100)),
        ("[::1]:8080", ("::1", 8080)),
        ("localhost:0", ("localhost", 0)),
        ("off", None),
        ("OFF", None),
        ("", None),
    ],
)
def test_http_listen(
    monkeypatch: pytest.MonkeyPatch, raw: str, address: tuple[str, int] | None
) -> None:
    monkeypatch.setenv("BRIDGE_HTTP__LISTEN", raw)
    assert load_settings().http.address == address


def test_case_is_forgiven_for_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_AMQP__EXCHANGE_TYPE", "Fanout")
    monkeypatch.setenv("BRIDGE_LOG__LEVEL", "warning")
    monkeypatch.setenv("BRIDGE_SPOOL__FULL_POLICY", "DROP_OLDEST")
    monkeypatch.setenv("BRIDGE_AMQP__TEXT_ENCODING", "Latin1")
    settings = load_settings()
    assert settings.amqp.exchange_type == "fanout"
    assert settings.log.level == "WARNING"
    assert settings.spool.full_policy == "drop_oldest"
    assert settings.amqp.text_encoding == "iso8859-1"


def test_tls_with_amqps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("PEM")
    monkeypatch.setenv("BRIDGE_AMQP__URL", "amqps://mq.example.com/")
    monkeypatch.setenv("BRIDGE_AMQP__TLS__CA_FILE", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("BRIDGE_AMQP__TLS__CERT_FILE", str(tmp_path / "client.pem"))
    monkeypatch.setenv("BRIDGE_AMQP__TLS__KEY_FILE", str(tmp_path / "client.key"))
    monkeypatch.setenv("BRIDGE_AMQP__TLS__SERVER_NAME", "rabbit")
    tls = load_settings().amqp.tls
    assert tls.ca_file == tmp_path / "ca.pem"
    assert tls.key_file == tmp_path / "client.key"
    assert tls.server_name == "rabbit"


# --------------------------------------------------------------------------- bad inputs


BAD_INPUTS = [
    (
        "BRIDGE_AMQP__EXCHANGE_TYPE",
        "fnout",
        ("BRIDGE_AMQP__EXCHANGE_TYPE (amqp.exchange_type): must be one of direct, fanout, "
        "headers, topic; got 'fnout'"),
    ),
    (
        "BRIDGE_AMQP__URL",
        "http://guest:guest@mq/",
        "BRIDGE_AMQP__URL (amqp.url): must start with amqp:// or amqps://",
    ),
    (
        "BRIDGE_AMQP__URL",
        "mq.example.com:5672",
        "BRIDGE_AMQP__URL (amqp.url): must start with amqp:// or amqps://",
    ),
    (
        "BRIDGE_AMQP__URL",
        "amqp//mq.example.com/",
        "BRIDGE_AMQP__URL (amqp.url): must start with amqp:// or amqps://",
    ),
    (
        "BRIDGE_AMQP__URL",
        "amqp:///vhost",
        "BRIDGE_AMQP__URL (amqp.url): has no host; expected amqp://USER:PASSWORD@HOST:PORT/VHOST",
    ),
    (
        "BRIDGE_AMQP__URL",
        "amqp://u:p@mq:99999/",
        "BRIDGE_AMQP__URL (amqp.url): has an invalid port (expected a number 1-65535)",
    ),
    (
        "BRIDGE_AMQP__ROUTING_KEY",
        "{owner}.{table}",
        ("BRIDGE_AMQP__ROUTING_KEY (amqp.routing_key): routing key template '{owner}.{table}' "
        "uses unknown placeholder {table}; allowed: {database}, {name}, {owner}"),
    ),
    (
        "BRIDGE_AMQP__ROUTING_KEY",
        "{name!r}",
        ("BRIDGE_AMQP__ROUTING_KEY (amqp.routing_key): routing key template '{name!r}': "
        "placeholder {name} must not have a format spec or conversion (':...' or '!...')"),
    ),
    (
        "BRIDGE_AMQP__ROUTING_KEY",
        "{owner.{name}",
        ("BRIDGE_AMQP__ROUTING_KEY (amqp.routing_key): unbalanced brace in '{owner.{name}': "
        "placeholders are {owner}, {name}, {database}; write {{ or }} for a literal brace"),
    ),
    (
        "BRIDGE_AMQP__ROUTING_KEY",
        "db.}",
        ("BRIDGE_AMQP__ROUTING_KEY (amqp.routing_key): unbalanced brace in 'db.}': "
        "placeholders are {owner}, {name}, {database}; write {{ or }} for a literal brace"),
    ),
    (
        "BRIDGE_INGRES__EVENTS",
        "orders, 9lives",
        ("BRIDGE_INGRES__EVENTS (ingres.events): '9lives' is not a valid event name: a name "
        "starts with a letter or _ and holds only letters, digits, _, #, @ and $ (put any "
        "other name in double quotes)"),
    ),
    (
        "BRIDGE_INGRES__EVENTS",
        "orders,stock-low",
        ("BRIDGE_INGRES__EVENTS (ingres.events): 'stock-low' is not a valid event name: a name "
        "starts with a letter or _ and holds only letters, digits, _, #, @ and $ (put any "
        "other name in double quotes)"),
    ),
    (
        "BRIDGE_INGRES__EVENTS",
        "Orders, stock, ORDERS",
        "BRIDGE_INGRES__EVENTS (ingres.events): 'ORDERS' is listed twice (first as 'Orders')",
    ),
    (
        "BRIDGE_INGRES__EVENTS",
        "a.b.c",
        ("BRIDGE_INGRES__EVENTS (ingres.events): 'a.b.c' has too many dots: write name or "
        "owner.name"),
    ),
    (
        "BRIDGE_INGRES__EVENTS",
        "a,,b",
        "BRIDGE_INGRES__EVENTS (ingres.events): item 2 of 3 is empty (a stray comma?)",
    ),
    (
        "BRIDGE_INGRES__EVENTS",
        '"unclosed',
        "BRIDGE_INGRES__EVENTS (ingres.events): '\"unclosed' has unbalanced double quotes",
    ),
    (
        "BRIDGE_INGRES__EVENTS",
        '["a", ',
        ("BRIDGE_INGRES__EVENTS (ingres.events): starts with '[' but is not a JSON list: "
        "Expecting value: line 1 column 6 (char 5)"),
    ),
    (
        "BRIDGE_INGRES__EVENTS",
        "a" * 33,
        f"BRIDGE_INGRES__EVENTS (ingres.events): '{'a' * 33}' is longer than 32 bytes",
    ),
    (
        "BRIDGE_AMQP__CONFIRM_WINDOW",
        "-1",
        "BRIDGE_AMQP__CONFIRM_WINDOW (amqp.confirm_window): must be greater than 0; got '-1'",
    ),
    (
        "BRIDGE_AMQP__CONFIRM_WINDOW",
        "lots",
        ("BRIDGE_AMQP__CONFIRM_WINDOW (amqp.confirm_window): must be a valid integer, unable "
        "to parse string as an integer; got 'lots'"),
    ),
    (
        "BRIDGE_AMQP__PUBLISH_TIMEOUT",
        "0",
        ("BRIDGE_AMQP__PUBLISH_TIMEOUT (amqp.publish_timeout): must be a positive duration in "
        "seconds, or with a unit (500ms, 2.5s, 2m, 1h); got '0'"),
    ),
    (
        "BRIDGE_INGRES__GET_EVENT_TIMEOUT",
        "5 minutes",
        ("BRIDGE_INGRES__GET_EVENT_TIMEOUT (ingres.get_event_timeout): must be a positive "
        "duration in seconds, or with a unit (500ms, 2.5s, 2m, 1h); got '5 minutes'"),
    ),
    (
        "BRIDGE_AMQP__TEXT_ENCODING",
        "utf-9",
        ("BRIDGE_AMQP__TEXT_ENCODING (amqp.text_encoding): unknown text encoding 'utf-9'; use "
        "a Python codec name such as utf-8, latin-1 or cp1252"),
    ),
    (
        "BRIDGE_AMQP__TEXT_ENCODING",
        "base64",
        "BRIDGE_AMQP__TEXT_ENCODING (amqp.text_encoding): 'base64' is not a text encoding",
    ),
    (
        "BRIDGE_LOG__LEVEL",
        "verbose",
        ("BRIDGE_LOG__LEVEL (log.level): must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; "
        "got 'verbose'"),
    ),
    (
        "BRIDGE_LOG__FORMAT",
        "xml",
        "BRIDGE_LOG__FORMAT (log.format): must be one of json, console; got 'xml'",
    ),
    (
        "BRIDGE_HTTP__LISTEN",
        "localhost",
        ("BRIDGE_HTTP__LISTEN (http.listen): must be HOST:PORT (e.g. 0.0.0.0:8080, [::]:8080, "
        ":9100) or 'off'; got 'localhost'"),
    ),
    (
        "BRIDGE_HTTP__LISTEN",
        "0.0.0.0:70000",
        ("BRIDGE_HTTP__LISTEN (http.listen): must be HOST:PORT (e.g. 0.0.0.0:8080, [::]:8080, "
        ":9100) or 'off'; got '0.0.0.0:70000'"),
    ),
    (
        "BRIDGE_SPOOL__MAX_BYTES",
        "12XB",
        ("BRIDGE_SPOOL__MAX_BYTES (spool.max_bytes): must be a size in bytes, or with a unit "
        "(KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024); got '12XB'"),
    ),
    (
        "BRIDGE_SPOOL__MAX_BYTES",
        "0MiB",
        "BRIDGE_SPOOL__MAX_BYTES (spool.max_bytes): must be greater than 0; got '0MiB'",
    ),
    (
        "BRIDGE_SPOOL__FULL_POLICY",
        "wait",
        ("BRIDGE_SPOOL__FULL_POLICY (spool.full_policy): must be one of block, drop_newest, "
        "drop_oldest; got 'wait'"),
    ),
    (
        "BRIDGE_SPOOL__ENABLED",
        "maybe",
        ("BRIDGE_SPOOL__ENABLED (spool.enabled): must be true or false (also: yes/no, on/off, "
        "1/0); got 'maybe'"),
    ),
    (
        "BRIDGE_QUEUE__MAX_EVENTS",
        "0",
        "BRIDGE_QUEUE__MAX_EVENTS (queue.max_events): must be greater than 0; got '0'",
    ),
    (
        "BRIDGE_AMQP__EXCHANGE",
        "amq.topic",
        ("BRIDGE_AMQP__EXCHANGE (amqp.exchange): names starting with 'amq.' are reserved by "
        "the broker and cannot be declared; set BRIDGE_AMQP__DECLARE_EXCHANGE=false to "
        "publish to an existing one"),
    ),
    (
        "BRIDGE_AMQP__EXCHANGE",
        "",
        "BRIDGE_AMQP__EXCHANGE (amqp.exchange): must have at least 1 character; got ''",
    ),
    (
        "BRIDGE_AMQP__TLS__CA_FILE",
        "/nonexistent/ca.pem",
        ("BRIDGE_AMQP__TLS__CA_FILE (amqp.tls.ca_file): must name an existing file; "
         "got '/nonexistent/ca.pem'"),
    ),
    (
        "BRIDGE_AMQP__TLS__CA_FILE",
        "/",
        "BRIDGE_AMQP__TLS__CA_FILE (amqp.tls.ca_file): must name an existing file; got '/'",
    ),
    (
        "BRIDGE_AMQP__TLS__VERIFY_HOSTNAME",
        "false",
        ("BRIDGE_AMQP__TLS__VERIFY_HOSTNAME (amqp.tls.verify_hostname): applies to amqps:// "
        "URLs only, and amqp.url is amqp://"),
    ),
    (
        "BRIDGE_INGRES__TARGET",
        "  ",
        ("BRIDGE_INGRES__TARGET (ingres.target): must not be empty; e.g. mydb, myvnode::mydb "
        "or @host,tcp_ip,II::mydb"),
    ),
    (
        "BRIDGE_INGRES__TARGET",
        "vnode::",
        ("BRIDGE_INGRES__TARGET (ingres.target): needs a database name (after '::' if a node "
        "is given); got 'vnode::'"),
    ),
    (
        "BRIDGE_INGRES__TARGET",
        "@dbhost,II::db",
        ("BRIDGE_INGRES__TARGET (ingres.target): a dynamic node is written @host,protocol,port;"
        " got '@dbhost,II::db'"),
    ),
    (
        "BRIDGE_INGRES__TARGET",
        "@h,tcp_ip,II[user]::db",
        ("BRIDGE_INGRES__TARGET (ingres.target): credentials must be written [user,password] "
        "(target not shown)"),
    ),
    (
        "BRIDGE_INGRES__PASSWORD",
        "pw",
        ("BRIDGE_INGRES__PASSWORD (ingres.password): is set but BRIDGE_INGRES__USER "
        "(ingres.user) is not"),
    ),
    (
        "BRIDGE_AMQP__TYPO",
        "1",
        ("BRIDGE_AMQP__TYPO (amqp.typo): unknown setting; known here: url, exchange, "
        "exchange_type, declare_exchange, routing_key, gap_routing_key, confirm_window, "
        "publish_timeout, reconnect_backoff_min, reconnect_backoff_max, text_encoding, format, "
        "tls"),
    ),
]


@pytest.mark.parametrize(
    ("variable", "value", "message"), BAD_INPUTS, ids=[f"{v}={x}" for v, x, _ in BAD_INPUTS]
)
def test_bad_input_is_reported_exactly(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert problems_of() == [message]


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_AMQP__EXCHANGE_TYPE", "fnout")
    monkeypatch.setenv("BRIDGE_LOG__LEVEL", "loud")
    monkeypatch.setenv("BRIDGE_SPOOL__MAX_BYTES", "big")
    problems = problems_of()
    assert [line.split(" ", 1)[0] for line in problems] == [
        "BRIDGE_AMQP__EXCHANGE_TYPE",
        "BRIDGE_SPOOL__MAX_BYTES",
        "BRIDGE_LOG__LEVEL",
    ]


def test_cross_field_problems_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGRES__RECONNECT_BACKOFF_MIN", "2m")
    monkeypatch.setenv("BRIDGE_INGRES__RECONNECT_BACKOFF_MAX", "30")
    assert problems_of() == [
        ("BRIDGE_INGRES__RECONNECT_BACKOFF_MAX (ingres.reconnect_backoff_max): must not be "
        "less than reconnect_backoff_min (120s); got 30s")
    ]


def test_credentials_given_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGRES__TARGET", f"@h,tcp_ip,II[bridge,{PASSWORD}]::db")
    monkeypatch.setenv("BRIDGE_INGRES__USER", "bridge")
    problems = problems_of()
    assert problems == [
        ("BRIDGE_INGRES__USER (ingres.user): the target already carries [user,password]; "
        "give the credentials only once")
    ]


def test_key_file_needs_cert_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "client.key").write_text("PEM")
    monkeypatch.setenv("BRIDGE_AMQP__URL", "amqps://mq/")
    monkeypatch.setenv("BRIDGE_AMQP__TLS__KEY_FILE", str(tmp_path / "client.key"))
    assert problems_of() == [
        "BRIDGE_AMQP__TLS__KEY_FILE (amqp.tls.key_file): is set but cert_file is not"
    ]


def test_missing_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.toml"
    assert problems_of(config_file=missing) == [f"--config: config file '{missing}' does not exist"]
    monkeypatch.setenv("BRIDGE_CONFIG_FILE", str(missing))
    assert problems_of() == [f"BRIDGE_CONFIG_FILE: config file '{missing}' does not exist"]


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    assert problems_of(config_file=tmp_path) == [
        f"--config: config file '{tmp_path}' is a directory"
    ]


def test_invalid_toml(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "[amqp]\nexchange = ingres.dbevents\n")
    assert problems_of(config_file=toml) == [
        f"--config: config file '{toml}' is not valid TOML: Invalid value (at line 2, column 12)"
    ]


def test_unknown_keys_in_toml_are_errors_with_suggestions(tmp_path: Path) -> None:
    toml = write_toml(
        tmp_path,
        '[amqp]\nexchnage = "x"\n[amqp.tls]\nca = "y"\n[log]\nlevel = "info"\n[metrics]\nx = 1\n',
    )
    assert problems_of(config_file=toml) == [
        ("BRIDGE_AMQP__TLS__CA (amqp.tls.ca): unknown setting; did you mean amqp.tls.ca_file "
        "(BRIDGE_AMQP__TLS__CA_FILE)?"),
        ("BRIDGE_AMQP__EXCHNAGE (amqp.exchnage): unknown setting; did you mean amqp.exchange "
        "(BRIDGE_AMQP__EXCHANGE)?"),
        ("BRIDGE_METRICS (metrics): unknown setting; known here: ingres, amqp, spool, queue, "
        "shutdown, ha, http, log"),
    ]


def test_wrong_toml_types(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, 'amqp = "x"\n[ingres]\nevents = [1, 2]\n')
    assert problems_of(config_file=toml) == [
        "BRIDGE_INGRES__EVENTS (ingres.events): must be a list of names (strings)",
        "BRIDGE_AMQP (amqp): must be a valid dictionary or instance of AmqpSettings; got 'x'",
    ]


def test_unknown_command_line_override() -> None:
    assert problems_of({"amqp": {"exchange_typ": "fanout"}}) == [
        ("BRIDGE_AMQP__EXCHANGE_TYP (amqp.exchange_typ): unknown setting; did you mean "
        "amqp.exchange_type (BRIDGE_AMQP__EXCHANGE_TYPE)?")
    ]


def test_section_as_bad_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_AMQP", "{not json")
    assert problems_of() == [
        ("BRIDGE_AMQP (amqp): is not valid JSON (in the environment); set each setting as "
        "BRIDGE_AMQP__... instead")
    ]


@pytest.mark.parametrize("source", ["dotenv", "secrets"])
def test_section_as_bad_json_names_its_source(tmp_path: Path, source: str) -> None:
    if source == "dotenv":
        (tmp_path / ".env").write_text("BRIDGE_LOG={not json\n")
    else:
        write_secret(tmp_path, "BRIDGE_LOG", "{not json")
    where = ".env" if source == "dotenv" else "the secrets directory"
    assert problems_of() == [
        (f"BRIDGE_LOG (log): is not valid JSON (in {where}); set each setting as "
         "BRIDGE_LOG__... instead"),
    ]


def test_settings_error_does_not_chain_the_validation_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_AMQP__URL", f"amqp://u:{PASSWORD}@mq:bad/")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    # A chained ValidationError would print raw inputs (the password) in a traceback.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


# --------------------------------------------------------------------------- secrets


def secret_free(text: str) -> bool:
    return PASSWORD not in text and PASSWORD.lower() not in text.lower()


def test_passwords_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_AMQP__URL", f"amqp://bridge:{PASSWORD}@mq.example.com:5672/prod")
    monkeypatch.setenv("BRIDGE_INGRES__TARGET", f"@dbhost,tcp_ip,II[ingres,{PASSWORD}]::db")
    settings = load_settings()
    (tmp_path / "other").mkdir()
    write_secret(tmp_path / "other", "BRIDGE_INGRES__PASSWORD", PASSWORD)
    for text in (repr(settings), str(settings), repr(settings.amqp), str(settings.masked_dict())):
        assert secret_free(text), text
    assert settings.amqp.url_masked == "amqp://bridge:***@mq.example.com:5672/prod"
    assert settings.masked_dict()["amqp"]["url"] == "amqp://bridge:***@mq.example.com:5672/prod"
    assert settings.masked_dict()["ingres"]["target"] == "@dbhost,tcp_ip,II[ingres,***]::db"
    assert settings.ingres.target is not None
    assert settings.ingres.target.get_secret_value().endswith(f"[ingres,{PASSWORD}]::db")
    assert str(settings.amqp.url.get_secret_value()) == (
        f"amqp://bridge:{PASSWORD}@mq.example.com:5672/prod"
    )


def test_ingres_password_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_secret(tmp_path, "BRIDGE_INGRES__PASSWORD", PASSWORD)
    monkeypatch.setenv("BRIDGE_INGRES__USER", "bridge")
    settings = load_settings()
    assert settings.masked_dict()["ingres"]["password"] == "***"
    assert secret_free(repr(settings))
    assert secret_free(str(settings.masked_dict()))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BRIDGE_AMQP__URL", f"amqp://u:{PASSWORD}@mq:bad/"),
        ("BRIDGE_AMQP__URL", f"amqp://u:{PASSWORD}@/"),
        ("BRIDGE_AMQP__URL", f"amqp//u:{PASSWORD}@mq/"),
        ("BRIDGE_AMQP__URL", f"https://u:{PASSWORD}@mq/"),
        ("BRIDGE_INGRES__TARGET", f"@h,tcp_ip[u,{PASSWORD}]::db"),
        ("BRIDGE_INGRES__TARGET", f"@h,tcp_ip,II[u,{PASSWORD}]::"),
        ("BRIDGE_INGRES__TARGET", f"@h,tcp_ip,II[u,{PASSWORD}::db"),
        ("BRIDGE_INGRES__PASSWORD", PASSWORD),
    ],
)
def test_passwords_never_in_error_messages(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("BRIDGE_LOG__LEVEL", "loud")  # a second problem, in the same report
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert len(caught.value.problems) == 2
    assert secret_free(str(caught.value))
    assert all(secret_free(line) for line in caught.value.problems)


def test_password_of_wrong_type_in_toml_is_not_echoed(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, f'[amqp]\nurl = ["{PASSWORD}"]\n')
    problems = problems_of(config_file=toml)
    assert problems == ["BRIDGE_AMQP__URL (amqp.url): must be a valid string"]


# --------------------------------------------------------------------------- command line


def test_one_option_per_leaf_setting() -> None:
    help_text = parser().format_help()
    for path, _field in leaf_fields(Settings):
        option = "--" + "-".join(path).replace("_", "-")
        assert option in help_text, option
        assert env_name(path) in help_text
    assert "--config PATH" in help_text


def test_options_not_given_override_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = parser().parse_args([])
    assert vars(ns) == {"config": None}
    monkeypatch.setenv("BRIDGE_AMQP__DECLARE_EXCHANGE", "false")
    assert _settings_from(ns).amqp.declare_exchange is False


def test_options_override_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = write_toml(tmp_path, '[log]\nformat = "console"\n')
    monkeypatch.setenv("BRIDGE_AMQP__EXCHANGE", "env.ex")
    monkeypatch.setenv("BRIDGE_AMQP__DECLARE_EXCHANGE", "true")
    ns = parser().parse_args(
        [
            "--config", str(toml),
            "--amqp-exchange", "cli.ex",
            "--no-amqp-declare-exchange",
            "--ingres-events", "a, owner.b",
            "--amqp-tls-verify-hostname",
            "--http-listen", "off",
            "--spool-max-bytes", "64MiB",
        ]
    )  # fmt: skip
    assert ns.config == toml
    settings = _settings_from(ns)
    assert settings.amqp.exchange == "cli.ex"
    assert settings.amqp.declare_exchange is False
    assert settings.ingres.events == ["a", "owner.b"]
    assert settings.http.address is None
    assert settings.spool.max_bytes == 64 * 2**20
    assert settings.log.format == "console"


def test_help_warns_against_passwords_on_the_command_line() -> None:
    help_text = " ".join(parser().format_help().split("options:", 1)[1].split())
    for option in ("--ingres-password", "--amqp-url", "--ingres-target ", "--ingres-targets"):
        section = help_text.split(option, 1)[1].split(" --", 1)[0]
        assert "prefer the environment or a secrets file" in section, option
    assert "--amqp " not in help_text  # a section as JSON works, but is not listed


def test_section_as_json_on_the_command_line() -> None:
    ns = parser().parse_args(["--log", '{"level": "debug"}', "--log-format", "console"])
    assert (_settings_from(ns).log.level, _settings_from(ns).log.format) == ("DEBUG", "console")


def test_repeated_list_option_adds_up() -> None:
    ns = parser().parse_args(["--ingres-events", "a", "--ingres-events", '"Low, Level",b'])
    assert _settings_from(ns).ingres.events == ["a", '"Low, Level"', "b"]


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(["--amqp-exchnage-type", "fanout"])
    assert caught.value.code == 2
    assert "unrecognized arguments: --amqp-exchnage-type" in capsys.readouterr().err


def test_bad_option_value_names_the_setting() -> None:
    ns = parser().parse_args(["--amqp-exchange-type", "fnout"])
    with pytest.raises(SettingsError) as caught:
        _settings_from(ns)
    assert caught.value.problems == [
        ("BRIDGE_AMQP__EXCHANGE_TYPE (amqp.exchange_type): must be one of direct, fanout, "
        "headers, topic; got 'fnout'")
    ]


# --------------------------------------------------------------------------- example files


def toml_keys(text: str) -> set[tuple[str, ...]]:
    """Every key of the example TOML, set or commented out, as a path."""
    keys: set[tuple[str, ...]] = set()
    table: tuple[str, ...] = ()
    for line in text.splitlines():
        if header := re.fullmatch(r"\[([a-z_.]+)\]", line.strip()):
            table = tuple(header.group(1).split("."))
        elif key := re.match(r"#?\s?([a-z_]+) = ", line):
            keys.add((*table, key.group(1)))
    return keys


def env_keys(text: str) -> set[str]:
    """Every variable of the example .env, set or commented out."""
    return set(re.findall(r"^#?\s?(BRIDGE_[A-Z_]+)=", text, re.MULTILINE))


def test_every_setting_is_in_both_example_files() -> None:
    leaves = {path for path, _field in leaf_fields(Settings)}
    toml_text = EXAMPLE_TOML.read_text()
    assert toml_keys(toml_text) == leaves
    assert env_keys(EXAMPLE_ENV.read_text()) == {env_name(path) for path in leaves}
    for path in leaves:
        assert f"env: {env_name(path)}; default: " in toml_text, path


def test_example_toml_loads_and_states_the_defaults() -> None:
    tomllib.loads(EXAMPLE_TOML.read_text())
    assert load_settings(config_file=EXAMPLE_TOML).masked_dict() == load_settings().masked_dict()


def test_example_env_loads_as_dotenv_and_states_the_defaults(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(EXAMPLE_ENV.read_text())
    from_example = load_settings().masked_dict()
    (tmp_path / ".env").unlink()
    assert from_example == load_settings().masked_dict()


def test_example_toml_with_its_commented_examples_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The commented-out examples must be valid too (TLS files aside: they need files).
    text = EXAMPLE_TOML.read_text()
    for key in ("target", "user", "password", "events"):
        text = re.sub(rf"^# ({key} = )", r"\1", text, flags=re.MULTILINE)
    settings = load_settings(config_file=write_toml(tmp_path, text))
    assert settings.ingres.events == ["order_changed", "stock.low_stock", '"Price Update"']
    settings.require_runnable()


def test_message_format(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().amqp.format == "json"
    monkeypatch.setenv("BRIDGE_AMQP__FORMAT", "CloudEvents")
    assert load_settings().amqp.format == "cloudevents"
    monkeypatch.setenv("BRIDGE_AMQP__FORMAT", "avro")
    assert problems_of() == [
        "BRIDGE_AMQP__FORMAT (amqp.format): must be one of json, cloudevents; got 'avro'"
    ]


def test_several_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGRES__TARGETS",
                       f'["a::sales", "@b,tcp_ip,II[bridge,{PASSWORD}]::stock"]')
    settings = load_settings()
    assert [t.get_secret_value() for t in settings.ingres.all_targets()] == [
        "a::sales", f"@b,tcp_ip,II[bridge,{PASSWORD}]::stock"]
    assert settings.masked_dict()["ingres"]["targets"] == [
        "a::sales", "@b,tcp_ip,II[bridge,***]::stock"]
    settings.require_target()


@pytest.mark.parametrize(
    ("targets", "problem"),
    [
        ('["a::sales", "b::sales"]',
         ("'b::sales' and 'a::sales' both name database 'sales'; each target needs a database "
         "of its own")),
        (f'["a::sales", "b[u,{PASSWORD}', "must be a JSON list of targets"),
        ('["a::"]', "needs a database name"),
    ],
)
def test_bad_targets(monkeypatch: pytest.MonkeyPatch, targets: str, problem: str) -> None:
    monkeypatch.setenv("BRIDGE_INGRES__TARGETS", targets)
    problems = problems_of()
    assert len(problems) == 1
    assert problems[0].startswith("BRIDGE_INGRES__TARGETS (ingres.targets): ")
    assert problem in problems[0]
    assert PASSWORD not in problems[0]


def test_target_and_targets_are_exclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGRES__TARGET", "a::sales")
    monkeypatch.setenv("BRIDGE_INGRES__TARGETS", '["b::stock"]')
    assert problems_of() == [
        ("BRIDGE_INGRES__TARGETS (ingres.targets): is set together with ingres.target; give one "
        "database as BRIDGE_INGRES__TARGET or several as BRIDGE_INGRES__TARGETS, not both")
    ]


def test_per_database_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGRES__TARGETS", '["a::sales", "b::stock"]')
    monkeypatch.setenv("BRIDGE_INGRES__DATABASES__STOCK__PASSWORD", PASSWORD)
    config = write_toml(tmp_path, """
[ingres]
user = "bridge"
events = ["order_created"]

[ingres.databases.stock]
user = "stockreader"
events = ["low_stock", "ingres.price_changed"]
""")
    settings = load_settings(config_file=config)
    sales, stock = settings.ingres.per_database()
    assert (sales.user, sales.password, sales.events) == ("bridge", None, ["order_created"])
    # Each view is the section for one database: what its catcher reads, nothing else.
    assert [(view.target, view.targets, view.databases) for view in (sales, stock)] == [
        (settings.ingres.targets[0], [], {}), (settings.ingres.targets[1], [], {})]
    assert (sales.database_name, stock.database_name) == ("sales", "stock")
    assert sales.reconnect_backoff_min == settings.ingres.reconnect_backoff_min
    assert stock.user == "stockreader"
    assert stock.password is not None
    assert stock.password.get_secret_value() == PASSWORD
    assert stock.events == ["low_stock", "ingres.price_changed"]
    assert settings.masked_dict()["ingres"]["databases"]["stock"]["password"] == "***"
    settings.require_runnable()


def test_per_database_section_for_an_unknown_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGRES__TARGETS", '["a::sales"]')
    monkeypatch.setenv("BRIDGE_INGRES__DATABASES", '{"stok": {"events": ["x"]}}')
    assert problems_of() == [
        ("BRIDGE_INGRES__DATABASES__STOK (ingres.databases.stok): no target names database "
        "'stok'; the targets name: sales")
    ]


def test_every_database_needs_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGRES__TARGETS", '["a::sales", "b::stock"]')
    monkeypatch.setenv("BRIDGE_INGRES__DATABASES", '{"stock": {"events": ["low_stock"]}}')
    with pytest.raises(SettingsError, match="BRIDGE_INGRES__EVENTS"):
        load_settings().require_runnable()
    monkeypatch.setenv("BRIDGE_INGRES__DATABASES",
                       '{"stock": {"events": ["low_stock"]}, "sales": {"events": ["o"]}}')
    load_settings().require_runnable()


def test_unknown_key_in_a_database_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGRES__TARGETS", '["a::sales"]')
    monkeypatch.setenv("BRIDGE_INGRES__DATABASES__SALES__EVNTS", "x")
    assert problems_of() == [
        ("BRIDGE_INGRES__DATABASES__SALES__EVNTS (ingres.databases.sales.evnts): unknown "
        "setting; known here: user, password, events")
    ]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("routing_key", "{owner}.{table}", "uses unknown placeholder {table}"),
        ("text_encoding", "nope", "unknown text encoding 'nope'"),
        ("exchange", "", "must have at least 1 character"),
        ("gap_routing_key", "g" * 256, "is longer than 255 bytes"),
        ("confirm_window", 0, "must be greater than 0"),
        ("publish_timeout", 0, "must be a positive duration"),
    ],
)
def test_amqp_section_refuses_what_the_publisher_cannot_use(
    setting: str, value: object, message: str
) -> None:
    # The publisher takes this section as it is: nothing checks it a second time.
    with pytest.raises(SettingsError) as caught:
        Settings.isolated({"amqp": {setting: value}})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{env_name(('amqp', setting))} (amqp.{setting}): ")
    assert message in problem


@pytest.mark.parametrize(
    ("url", "vhost"),
    [("amqp://user:topsecret@rabbit:5672/prod%2Fv", "prod/v"), ("amqp://rabbit", "/"),
     ("amqp://rabbit/", "/"), ("amqps://u:p@rabbit/%2F", "/")],
)
def test_amqp_vhost_and_masked_url(url: str, vhost: str) -> None:
    amqp = Settings.isolated({"amqp": {"url": url}}).amqp
    assert amqp.vhost == vhost
    assert "topsecret" not in repr(amqp)
    assert "topsecret" not in amqp.url_masked
