"""`dbevent-bridge doctor`: whether the bridge can use the Ingres client installation.

One line per check, each with a hint when it fails; exit 0 only when all hold.
What an operator runs in the container after mounting their client.

The checks that load the OpenAPI library run in a child process (`python -m
bridge.doctor`, settings on stdin): pyngres loads one library per process,
quits the process when II_SYSTEM is unset, and a broken library can crash the
process outright. The child writes one JSON line per check as soon as it is
known, so a crash still leaves the checks before it, and the parent reports
the crash as the failing check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.exits import ExitStatus
from bridge.openapi import (
    API_VERSION,
    OpenAPIError,
    OpenAPIUnavailableError,
    Session,
    check_ii_system,
)
from bridge.settings import Settings

# A known instant, every field distinct (event times carry whole seconds).
_SAMPLE_TIME = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check: what was looked at, and how to fix it when it failed."""

    name: str
    ok: bool
    detail: str
    hint: str = ""
    # A check that did not run (nothing to check) passes, but must not read as verified.
    skipped: bool = False

    def line(self) -> str:
        """The check as one line of output."""
        verdict = "SKIP" if self.skipped else "OK  " if self.ok else "FAIL"
        text = f"{verdict}  {self.name}: {self.detail}"
        return text if self.ok or not self.hint else f"{text} — {self.hint}"


def run_doctor(settings: Settings) -> ExitStatus:
    """Run every check, print one line each, return the exit status."""
    checks = _installation_checks()
    if all(c.ok for c in checks):
        checks += _library_checks(settings)
    for check in checks:
        print(check.line(), file=sys.stdout if check.ok else sys.stderr, flush=True)
    return ExitStatus.OK if all(c.ok for c in checks) else ExitStatus.FAILURE


def _installation_checks() -> list[Check]:
    """II_SYSTEM and the library file, without loading anything."""
    ii_system = os.environ.get("II_SYSTEM", "")
    try:
        library = check_ii_system()
    except OpenAPIUnavailableError as exc:
        name = "library" if ii_system else "II_SYSTEM"
        return [Check(name, False, str(exc),
                      "mount the Ingres/Actian client and set II_SYSTEM to its folder")]
    resolved = library.resolve()
    shown = str(library) if resolved == library else f"{library} -> {resolved}"
    return [
        Check("II_SYSTEM", True, ii_system),
        Check("library", True, f"{shown} ({resolved.stat().st_size} bytes)"),
    ]


def _library_checks(settings: Settings) -> list[Check]:
    """Run the checks that load the library in a child process and collect its lines."""
    # The first database, as its catcher sees it (its own user and events, if any).
    views = settings.ingres.per_database()
    ingres = views[0] if views else settings.ingres
    events = [name.sql for name in ingres.event_names()]
    request: dict[str, Any] = {
        "target": ingres.target.get_secret_value() if ingres.target else None,
        "user": ingres.user,
        "password": ingres.password.get_secret_value() if ingres.password else None,
        "events": events,
        "timeout_s": ingres.operation_timeout,
        "probe_timeout_s": ingres.probe_timeout,
    }
    # Every connect may take the operation timeout; the rest is quick.
    budget = ingres.operation_timeout * (2 + len(events)) + 60.0
    try:
        child = subprocess.run(
            [sys.executable, "-m", "bridge.doctor"], input=json.dumps(request),
            capture_output=True, text=True, timeout=budget, check=False,
        )
    except subprocess.TimeoutExpired:
        return [Check("client checks", False, f"no answer within {budget:.0f} s",
                      "the library hangs: check the network path to the target")]
    checks = [Check(**json.loads(line)) for line in child.stdout.splitlines() if line.strip()]
    # The child exits 0 once every check it ran is written, passed or not.
    if child.returncode != 0:
        why = (child.stderr.strip().splitlines() or ["no output"])[-1]
        checks.append(Check(
            "client checks", False, f"the check process ended with status {child.returncode}: "
            f"{why}",
            "the library does not load or crashed: is it a complete Ingres client for this "
            "platform, with its files/ and lib/ folders?",
        ))
    return checks


# -- the child process ----------------------------------------------------------------


def _emit(check: Check) -> bool:
    print(json.dumps(asdict(check)), flush=True)
    return check.ok


def _timezone_source() -> str:
    """Where II_TIMEZONE_NAME comes from: the environment or the installation's symbol.tbl."""
    if os.environ.get("II_TIMEZONE_NAME"):
        return f"II_TIMEZONE_NAME={os.environ['II_TIMEZONE_NAME']} (environment)"
    table = Path(os.environ["II_SYSTEM"]) / "ingres" / "files" / "symbol.tbl"
    try:
        for line in table.read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "II_TIMEZONE_NAME":
                return f"II_TIMEZONE_NAME={fields[1]} (ingsetenv)"
    except OSError:
        pass
    return "II_TIMEZONE_NAME is not set"


def _child(request: dict[str, Any]) -> int:
    """Run the library checks; 0 once all are written (the lines say which failed)."""
    from bridge.openapi import accepted_api_versions, load_pyngres
    from bridge.sim.wire import encode_ingresdate

    try:
        load_pyngres()
    except (OSError, AttributeError, ImportError) as exc:
        _emit(Check("loads", False, f"{type(exc).__name__}: {exc}",
                    "is it a complete Ingres client for this platform (lib/ and files/)?"))
        return 0
    _emit(Check("loads", True, "pyngres bound the OpenAPI functions"))
    versions = accepted_api_versions()
    tz = _timezone_source()
    if not _emit(Check(
        "API version",
        API_VERSION in versions,
        f"the library accepts in_version {versions.start}..{versions.stop - 1}; "
        f"the bridge uses {API_VERSION}" if versions else "IIapi_initialize refused every version",
        f"{tz}: set it with `ingsetenv II_TIMEZONE_NAME GMT`, and check that files/config.dat "
        "has a time-zone entry and files/zoneinfo holds the zone files",
    )):
        return 0
    session = Session(request["target"] or "", request["user"], request["password"],
                      timeout_s=float(request["timeout_s"]))
    try:
        if _date_check(session, tz, encode_ingresdate(_SAMPLE_TIME.timestamp())):
            if request["target"]:
                _target_checks(session, request["events"], float(request["probe_timeout_s"]))
            else:
                _emit(Check("connect", True, "no ingres.target set", skipped=True))
    finally:
        session.close()
    return 0


def _date_check(session: Session, tz: str, raw: bytes) -> bool:
    expected = _SAMPLE_TIME.replace(microsecond=0)
    try:
        session.initialize()
        got = session.event_time(raw)
    except OpenAPIError as exc:
        return _emit(Check("date formatting", False, str(exc),
                           f"{tz}; check files/zoneinfo in the installation"))
    return _emit(Check(
        "date formatting", got == expected,
        f"IIapi_formatData renders {expected.isoformat()} as {got.isoformat()} ({tz})",
        "the client's date/time-zone files are incomplete",
    ))


def _target_checks(session: Session, events: list[str], probe_timeout_s: float) -> None:
    from bridge.ingres_errors import advice

    try:
        session.open()
        session.probe(probe_timeout_s)
    except OpenAPIError as exc:
        _emit(Check("connect", False, str(exc), advice(exc)
                    or "check ingres.target, the network path and that the server runs"))
        return
    _emit(Check("connect", True, "connected; the session answers"))
    for name in events:
        try:
            session.register(name)
        except OpenAPIError as exc:
            _emit(Check(f"register {name}", False, str(exc),
                        "create the DBEvent, or GRANT REGISTER ON DBEVENT to the user"))
        else:
            _emit(Check(f"register {name}", True, "registered"))


if __name__ == "__main__":
    sys.exit(_child(json.loads(sys.stdin.read())))
