"""Which Ingres errors stop the bridge and which are retried: by error code."""

from __future__ import annotations

import pytest

from bridge.ingres_errors import Remedy, explain, remedy
from bridge.openapi import ApiError, OpenAPIError, SessionTimeoutError, error_name

# As the real Actian Client 1.5 library reports a closed port.
UNREACHABLE = [
    ApiError(1, "08004", 0x1FE05, "Unable to make outgoing connection."),
    ApiError(1, "08006", 0xC90001, "The connection to the server has been aborted."),
]


def _failed(*errors: ApiError) -> OpenAPIError:
    return OpenAPIError("connect", 5, list(errors))


def test_codes_are_named_as_ingres_names_them() -> None:
    assert [error_name(c) for c in (0x1FE05, 0xC90001, 0xC000B, 0x10, 0x6020C)] == [
        "E_CLFE05", "E_AP0001", "E_GC000B", "E_US0010", "E_QE020C",
    ]
    assert error_name(-30100) == "-0x7594"


def test_an_unreachable_server_is_retried_although_its_sqlstate_is_08004() -> None:
    assert remedy(_failed(*UNREACHABLE)) is Remedy.RETRY_SOON
    assert "E_CLFE05" in explain(_failed(*UNREACHABLE))


@pytest.mark.parametrize(
    ("code", "sqlstate", "meaning"),
    [
        (0xC000B, "50000", "wrong user name or password"),
        (0x10, "08004", "database does not exist"),
        (0xC, "50000", "not a valid Ingres user"),
    ],
)
def test_rejected_settings_say_what_to_fix(code: int, sqlstate: str, meaning: str) -> None:
    exc = _failed(ApiError(3, sqlstate, code, "refused"))
    assert remedy(exc) is Remedy.FIX_SETTINGS
    line = explain(exc)
    assert meaning in line
    assert "ingres.target" in line
    assert "\n" not in line


def test_a_failure_without_error_information_is_unexplained_and_names_the_call() -> None:
    exc = OpenAPIError("IIapi_initialize(in_version=2)", 5, [])
    assert remedy(exc) is Remedy.UNEXPLAINED
    line = explain(exc)
    assert line.startswith("IIapi_initialize(in_version=2) failed (FAILURE): no error information")
    assert "dbevent-bridge doctor" in line


def test_a_failure_the_server_answered_is_retried_with_back_off() -> None:
    lost = ApiError(1, "08006", 0xC90001, "The connection to the server has been aborted.")
    assert remedy(_failed(lost)) is Remedy.RETRY


def test_a_timeout_is_retried_although_it_carries_no_error() -> None:
    assert remedy(SessionTimeoutError("get event", 5, [])) is Remedy.RETRY
