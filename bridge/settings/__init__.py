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
6. the defaults written in the models (`sections`).

Every problem is reported at once as a `SettingsError`, one line per problem,
naming the environment variable and the dotted path, never echoing a secret.
Passwords (Ingres password, the one inside the AMQP URL or the Ingres target)
are pydantic secrets (`SecretStr`, `Secret`): repr, str, logs and
`masked_dict()` show `***`.

Where each job lives (what a module needs, it imports from those above it):

- `tree`: walking the tree by path (the section at ('amqp', 'tls'), every leaf);
- `errors`: `SettingsError` and how a problem is told, one line per setting;
- `values`: durations, choices, addresses, targets, the secret-bearing strings;
- `event_names`: DBEvent names as Ingres spells them (`EventName`);
- `sources`: environment, .env, secrets directory, TOML, and their order;
- `sections`: `Settings` and its sections, the fields with defaults and checks;
- `cli`: one command-line option per setting (pydantic-settings' CLI source);
- `loading`: `load_settings`, every source into one `Settings`.

This module is the public face: import from `bridge.settings`, not from those.
"""

from bridge.settings.cli import add_settings_options
from bridge.settings.errors import ENV_PREFIX, SettingsError, env_name
from bridge.settings.event_names import EventName, parse_event_name
from bridge.settings.loading import load_settings
from bridge.settings.sections import (
    AmqpSettings,
    HaSettings,
    HttpSettings,
    IngresSettings,
    LogSettings,
    QueueSettings,
    Settings,
    ShutdownSettings,
    SpoolSettings,
    TlsSettings,
)
from bridge.settings.sources import DEFAULT_SECRETS_DIR, SECRETS_DIR_ENV
from bridge.settings.tree import leaf_fields
from bridge.settings.values import AmqpUrl, IngresTarget, database_of

__all__ = [
    "DEFAULT_SECRETS_DIR",
    "ENV_PREFIX",
    "SECRETS_DIR_ENV",
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
