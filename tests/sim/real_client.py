"""Parent side of the real-client scenarios (`real_client_child.py`).

Each scenario runs in a child process that loads Actian's library from the
given II_SYSTEM, with the API and GCA traces switched on; a failing child's
error names the trace file, so that a protocol failure can be read byte by byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[2]


class ScenarioError(AssertionError):
    """The child process failed; the message carries its stderr and trace file."""


def run_scenario(
    ii_system: Path, trace_dir: Path, scenario: str, timeout: float = 120.0, **params: Any
) -> dict[str, Any]:
    """Run `scenario` with the real library; its JSON report."""
    trace = trace_dir / f"{scenario}.trace"
    env = {
        **os.environ,
        "II_SYSTEM": str(ii_system),
        "II_GCA_TRACE": "5",
        "II_GCA_LOG": str(trace),
        "II_API_TRACE": "5",
        "II_API_LOG": str(trace),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.sim.real_client_child", scenario, json.dumps(params)],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise ScenarioError(
            f"{scenario} exited {proc.returncode}; trace {trace}\n{proc.stderr[-4000:]}"
        )
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def check_read_without_catch(report: dict[str, Any]) -> None:
    """What both libraries must report for the `read_without_catch` scenario.

    An event the library reads while no catch is posted matches no event
    handle and is discarded (aip/apiehndl.c, dispatch_dbev): a catch posted
    afterwards never sees it. One posted before the read is completed by it.
    """
    assert report["delivered"], "the first event was never delivered"
    assert report["delivered_posted"], "the second event was never delivered"
    for select in ("select_uncaught", "select_caught"):
        assert report[select]["query"] == 0, report[select]
        assert report[select]["errors"] == [], report[select]
    assert report["after_catch"] is None, "an event read with no catch posted was kept"
    assert report["completed_by_select"], "the query did not complete the posted catch"
    caught = report["caught"]
    assert caught["status"] == 0, caught
    assert bytes.fromhex(caught["text"]) == b"seen", caught
    assert report["disconnect"] == 0, report


def check_abort_pending(report: dict[str, Any]) -> None:
    """What both libraries must report for the `abort_pending` scenario.

    IIapi_abort fails the waiting getEvent at once (the connection's pending
    call is called back with E_AP0001: aip/apisqlc.c, action CBAB) and itself
    completes later, inside IIapi_wait, once the disconnect is done. So the
    library writes into a pending operation's parameter block during or after
    the abort: the block must still be alive (bridge.openapi.Session._start).
    """
    assert report["get_event_done_in_abort"], report
    assert report["get_event_status_in_abort"] == 5, report  # FAILURE
    assert [(e["code"], e["sqlstate"]) for e in report["get_event_errors_in_abort"]] == [
        (0xC90001, "08006")
    ], report
    assert not report["abort_done_in_abort"], "IIapi_abort completed without IIapi_wait"
    assert report["order"] == ["get_event", "abort"], report
    assert report["abort"] == 0, report


def check_release_open_env(report: dict[str, Any]) -> None:
    """What both libraries must report for the `release_open_env` scenario.

    IIapi_releaseEnv drops a connection still open, with WARNING, and calls
    back nothing it had pending (aip/apiinit.c); the API works afterwards.
    """
    assert report["release"] == 2, report  # WARNING
    assert not report["get_event_called_back"], report
    assert report["connect_again"] == 0, report
    assert report["select_again"] == 0, report
    assert report["disconnect"] == 0, report
