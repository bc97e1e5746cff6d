"""bridge.openapi.Session on the simulator's library and (opt-in) on a real one.

Pinned here are two rules of the OpenAPI the Session must respect, each shown
to crash or lose an event without the Session's care: a parameter block
belongs to the library until the library completes its operation, and an
event the library reads while no catch is posted is discarded. Each scenario
runs in a child process (tests/integration/openapi_child.py), because pyngres
loads one library per process; the same scenario runs on both libraries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[2]


def _run(scenario: str, ii_system: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.openapi_child", scenario],
        cwd=_ROOT,
        # PYTHONMALLOC=debug fills freed memory with 0xDD, so a library writing
        # into a freed parameter block calls 0xDDDD... and the child dies.
        env={**os.environ, "II_SYSTEM": ii_system, "PYTHONMALLOC": "debug",
             "PYTHONFAULTHANDLER": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{scenario} exited {proc.returncode}\n{proc.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.fixture(params=["simulator", pytest.param("real", marks=pytest.mark.real_client)])
def ii_system(request: pytest.FixtureRequest) -> str:
    """II_SYSTEM of the simulator's library, or of a real one (opt-in)."""
    if request.param == "real":
        return str(request.getfixturevalue("real_ii_system"))
    return os.environ["II_SYSTEM"]  # set to the simulator's by tests/conftest.py


def test_a_timed_out_probe_leaves_no_freed_block_to_the_library(ii_system: str) -> None:
    """The operations a timed-out probe left pending are completed later (the real
    library fails them when the abort's disconnect completes, aip/apisqlc.c, and
    so does the simulator's): their blocks must still be alive."""
    report = _run("half_open", ii_system)
    assert report["timed_out"] is True
    assert report["abandoned"] == 0, "the connection moved again: the abort completed"


def test_a_session_that_never_answers_again_is_left_to_the_library(ii_system: str) -> None:
    """The real library's abort of a connection that stays half-open never
    completes; releasing its environment then crashed the next session's first
    IIapi_wait (SIGSEGV, Actian Client 1.5). The next session must catch."""
    report = _run("half_open_for_good", ii_system)
    assert report["timed_out"] is True
    # Both libraries leave the abort pending while the peer is silent; closing
    # waits no longer than the abort's bound (1 s, bridge/openapi.py) for it.
    assert report["abandoned"] == 1, report
    assert report["close_s"] < 2.0, report
    assert report["caught_after"] == "after", report


def test_an_event_raised_between_two_registrations_is_caught(ii_system: str) -> None:
    """The library reads it during the second REGISTER; with no catch posted it
    would discard it (aip/apiehndl.c, dispatch_dbev), so `register` posts one first."""
    report = _run("raised_between_registrations", ii_system)
    assert report["targets"] == 1, report
    assert report["sent"], report
    assert report["events"] == [{"name": "ev1", "text": "right after"}], (
        "the event raised right after REGISTER was lost"
    )
