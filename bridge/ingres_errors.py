"""What an Ingres error means for the bridge: fix the settings, or try again (how soon).

Judged by Ingres error codes, never by SQLSTATE class: the real client library
reports every GCA failure as SQLSTATE 08004 (aip/apisqlc.c), so an unreachable
server (E_CLFE05, 08004) and an unknown database (E_US0010, 08004) share a
class, and a rejected password (E_GC000B) is 50000 like most errors.
This is the one place that decides; the catcher and `doctor` follow it.
"""

from __future__ import annotations

import enum
from typing import Final

from bridge.openapi import OpenAPIError, SessionTimeoutError

# Codes that retrying cannot cure: the operator must change the target, the
# user or the password. (class << 16 | number; texts in ergcf.msg, erusf.msg.)
_SETTINGS_ERRORS: Final = {
    0x000C000B: "login rejected: wrong user name or password",  # E_GC000B_RMT_LOGIN_FAIL
    0x000C000E: "login rejected by the remote host",  # E_GC000E_RMT_LOGIN_FAIL_INFO
    0x000C1007: "no user authentication given",  # E_GC1007_NO_AUTHENTICATION
    0x000C1008: "user not authenticated",  # E_GC1008_INVALID_USER
    0x000C0132: "the target names an unknown vnode",  # E_GC0132_GCN_VNODE_UNKNOWN
    0x00000002: "the user may not use this server",  # E_US0002
    0x00000003: "the user may not access this database",  # E_US0003
    0x0000000C: "not a valid Ingres user",  # E_US000C
    0x0000000D: "no such Ingres user",  # E_US000D
    0x00000010: "the database does not exist",  # E_US0010
}


# Connect failures where no DBMS took the call: the real client's "Unable to
# make outgoing connection" for a closed port (E_CLFE05) and the name server's
# "association partner unavailable" (E_GC0021). Retrying them costs the DBMS nothing.
_NO_SERVER_ANSWERED: Final = frozenset({0x0001FE05, 0x000C0021})


class Remedy(enum.Enum):
    """What to do about a failed OpenAPI call."""

    RETRY_SOON = "retry soon"  # no server answered: cheap to retry, no back-off needed
    RETRY = "retry"  # the server answered with a failure, or did not answer in time: back off
    FIX_SETTINGS = "fix settings"  # credentials or database rejected: retrying cannot help
    UNEXPLAINED = "unexplained"  # FAILURE with no error information: the library refused


def remedy(exc: OpenAPIError) -> Remedy:
    """Classify a failed call by the Ingres error codes it carries."""
    if isinstance(exc, SessionTimeoutError):
        return Remedy.RETRY  # no answer in time: a half-open session, not a refusal
    if not exc.errors:
        return Remedy.UNEXPLAINED
    if any(e.code in _SETTINGS_ERRORS for e in exc.errors):
        return Remedy.FIX_SETTINGS
    if any(e.code in _NO_SERVER_ANSWERED for e in exc.errors):
        return Remedy.RETRY_SOON
    return Remedy.RETRY


def advice(exc: OpenAPIError) -> str | None:
    """What an operator should do about the error, when its codes say (else None)."""
    kind = remedy(exc)
    if kind is Remedy.FIX_SETTINGS:
        meaning = next(_SETTINGS_ERRORS[e.code] for e in exc.errors if e.code in _SETTINGS_ERRORS)
        return f"{meaning}: check ingres.target, ingres.user and ingres.password"
    if kind is Remedy.UNEXPLAINED:
        return ("the Ingres client library refused the call without saying why: "
                "run `dbevent-bridge doctor` to check the client installation")
    return None


def explain(exc: OpenAPIError) -> str:
    """One line for an operator: the error, and what to do about it when that is known."""
    hint = advice(exc)
    return str(exc) if hint is None else f"{exc} — {hint}"
