"""Where the settings come from, and in which order: the source plan.

pydantic-settings' sources for the process environment, `.env`, the secrets
directory and the TOML file, with the checks the README promises (an unknown
BRIDGE_ name is an error, a named config file must exist, a section given as
bad JSON names its setting); `source_plan` puts them in precedence order and
`build` fills a settings class from them, every problem as one SettingsError.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources import DefaultSettingsSource

from bridge.settings.errors import (
    SettingsError,
    env_name,
    problem,
    problems_of,
)

DEFAULT_SECRETS_DIR = Path("/run/secrets")
CONFIG_FILE_ENV = "BRIDGE_CONFIG_FILE"
SECRETS_DIR_ENV = "BRIDGE_SECRETS_DIR"

_SettingsT = TypeVar("_SettingsT", bound=BaseSettings)
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
            raise _UnreadableSourceError(problem(
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


# --------------------------------------------------------------------------- the source plan


def _config_file(config_file: Path | None) -> tuple[Path | None, str]:
    """The TOML file to read (--config, else BRIDGE_CONFIG_FILE) and where it was named."""
    if config_file is not None:
        return config_file.expanduser(), "--config"
    named = os.environ.get(CONFIG_FILE_ENV, "").strip()
    return (Path(named).expanduser(), CONFIG_FILE_ENV) if named else (None, CONFIG_FILE_ENV)


def _toml_source(
    settings_cls: type[BaseSettings], config_file: Path | None
) -> PydanticBaseSettingsSource:
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
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    except OSError as exc:
        raise _UnreadableSourceError(f"{where} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise _UnreadableSourceError(f"{where} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages give the position only, never the text: safe to show.
        raise _UnreadableSourceError(f"{where} is not valid TOML: {exc}") from None


def source_plan(
    settings_cls: type[BaseSettings],
    init: PydanticBaseSettingsSource | None,
    cli: PydanticBaseSettingsSource | None,
    config_file: Path | None,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """Every source but the defaults, highest first.

    `init` (overrides), the command line, the environment, .env, the secrets
    directory, the TOML file.
    """
    secrets_dir = os.environ.get(SECRETS_DIR_ENV, "").strip()
    sources: list[PydanticBaseSettingsSource | None] = [
        init,
        cli,
        _EnvironmentSource(settings_cls, env_file=None),
        _DotEnvSource(settings_cls),
        _SecretsSource(
            SecretsSettingsSource(settings_cls),
            secrets_dir=Path(secrets_dir).expanduser() if secrets_dir else DEFAULT_SECRETS_DIR,
        ),
        _toml_source(settings_cls, config_file),
    ]
    return tuple(source for source in sources if source is not None)


def build(
    settings_cls: type[_SettingsT], sources: Callable[[], tuple[PydanticBaseSettingsSource, ...]]
) -> _SettingsT:
    """`settings_cls` from `sources` and the defaults; every problem as a SettingsError.

    `sources` is called here, inside the try: a source that cannot be read
    reports as a SettingsError too.
    """
    try:
        return settings_cls(
            _build_sources=((*sources(), DefaultSettingsSource(settings_cls)), {})
        )
    except ValidationError as exc:
        problems = problems_of(settings_cls, exc)
    except _UnreadableSourceError as exc:
        problems = [str(exc)]
    # Raised outside the except blocks: the ValidationError (which holds the raw
    # inputs, secrets included) must not travel along as __context__.
    raise SettingsError(problems)


