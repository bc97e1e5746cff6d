"""Test setup for the simulator: the simulated II_SYSTEM, before pyngres is imported.

`import pyngres` reads II_SYSTEM at import time and exits the process when it
is unset, so the variable is set here, at conftest import, before any test
module imports pyngres.
"""

from __future__ import annotations

import os

from bridge.sim.build import ensure_ii_system


def use_simulated_ii_system() -> str:
    """Build (or reuse) the simulator library and point II_SYSTEM at it."""
    path = str(ensure_ii_system())
    os.environ["II_SYSTEM"] = path
    return path


use_simulated_ii_system()
