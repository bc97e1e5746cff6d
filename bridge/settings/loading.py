"""`load_settings`: every source, in precedence order, into one `Settings`.

The order is the package docstring's; the sources are sources.py's, the
command line cli.py's. Problems come back as one SettingsError listing them all.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic_settings import InitSettingsSource

from bridge.settings.cli import cli_source
from bridge.settings.sections import Settings
from bridge.settings.sources import (
    build,
    source_plan,
)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    cli: argparse.Namespace | None = None,
) -> Settings:
    """Load the settings from every source (see the package's docstring).

    `cli` is what a parser given `add_settings_options` parsed; `overrides`, a
    nested mapping (for embedding and tests), wins even over it. `config_file`
    comes from `--config`; without it `BRIDGE_CONFIG_FILE` names the TOML file,
    if set. Raises SettingsError listing every problem found.
    """
    init = InitSettingsSource(Settings, dict(overrides)) if overrides else None
    return build(Settings, lambda: source_plan(
        Settings, init, None if cli is None else cli_source()(parsed_args=cli), config_file
    ))


