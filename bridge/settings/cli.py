"""The command-line adapter: one option per setting, from pydantic-settings' CLI source.

`add_settings_options` puts `--config` and `--amqp-exchange-type` (and so on)
on the bridge's argparse parser; what it parsed goes to `load_settings(cli=...)`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic_settings import CliSettingsSource

from bridge.settings.sections import Settings
from bridge.settings.sources import CONFIG_FILE_ENV
from bridge.settings.tree import model_at


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
    section = model_at(Settings, path[:-1])
    field = section.model_fields.get(path[-1]) if section is not None else None
    if model_at(Settings, path) is not None:
        kwargs["help"] = argparse.SUPPRESS
    elif "metavar" in kwargs and field is not None and get_origin(field.annotation) is not Literal:
        kwargs["metavar"] = path[-1].upper()
    options = [name.replace(".", "-").replace("_", "-") for name in names]
    return parser.add_argument(*options, **kwargs)


def cli_source(
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
    cli_source(parser)
