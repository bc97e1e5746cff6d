"""The simulator's OpenAPI library against a real one, call sequence by call sequence.

Opt-in (marker `real_client`): BRIDGE_TEST_REAL_II_SYSTEM names a real Actian
Client / Ingres installation (README, "Running against a real Ingres"). Each
scenario of tests/sim/_differential_calls.py runs in a child process once per
library, since pyngres loads one library per process, and both must answer
the same: statuses, whether a call completes inside the call, the error lists
(type, SQLSTATE, code, message). Only what needs no live server is compared:
nothing here can tell a DBMS apart from the DBMS simulator. The parameter
blocks the simulator and pyngres lay out are checked against the real
`iiapi.h` of the installation.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyngres as py
import pytest

from bridge.sim.build import SOURCE_DIR, ensure_ii_system
from tests.sim import _differential_calls as calls
from tests.sim.serve import sim_serve

pytestmark = pytest.mark.real_client

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _run(ii_system: Path, scenario: str, port: int) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("II_", "BRIDGE_SIM_"))}
    env["II_SYSTEM"] = str(ii_system)
    env["II_DATE_FORMAT"] = "SWEDEN"  # the process default convertData uses, set for both
    done = subprocess.run(
        [sys.executable, "-m", "tests.sim._differential_calls", scenario, str(port)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{scenario} against {ii_system}:\n{done.stderr}"
    return json.loads(done.stdout)


def _assert_alike(real_ii_system: Path, scenario: str, port: int) -> None:
    real = _run(real_ii_system, scenario, port)
    simulated = _run(ensure_ii_system(), scenario, port)
    differences = {
        key: {"real": real.get(key), "simulator": simulated.get(key)}
        for key in sorted(real.keys() | simulated.keys())
        if real.get(key) != simulated.get(key)
    }
    assert not differences, json.dumps(differences, indent=1)


@pytest.mark.parametrize("scenario", sorted(calls.SCENARIOS))
def test_both_libraries_answer_alike(real_ii_system: Path, scenario: str) -> None:
    _assert_alike(real_ii_system, scenario, _closed_port())


@pytest.mark.parametrize("scenario", sorted(calls.SERVER_SCENARIOS))
def test_both_libraries_report_a_refusing_server_alike(
    real_ii_system: Path, tmp_path: Path, scenario: str
) -> None:
    """The DBMS simulator refuses; the real library hears it through the GCA front end."""
    users = tmp_path / "users.json"
    users.write_text('{"bob": "s3cret"}')
    with sim_serve("--users", str(users), "--database", "demodb") as (_, port):
        _assert_alike(real_ii_system, scenario, port)


# The parameter blocks whose layout the simulator declares in full (iiapi_sim.h),
# each with the fields an application or the simulator touches.
_BLOCKS: dict[str, tuple[str, ...]] = {
    "IIAPI_GENPARM": ("gp_callback", "gp_closure", "gp_completed", "gp_status", "gp_errorHandle"),
    "IIAPI_DESCRIPTOR": (
        "ds_dataType", "ds_nullable", "ds_length", "ds_precision", "ds_scale", "ds_columnType",
        "ds_columnName",
    ),
    "IIAPI_DATAVALUE": ("dv_null", "dv_length", "dv_value"),
    "IIAPI_SVR_ERRINFO": ("svr_id_error", "svr_severity", "svr_parmCount", "svr_parmValue"),
    "IIAPI_ABORTPARM": ("ab_genParm", "ab_connHandle"),
    "IIAPI_AUTOPARM": ("ac_connHandle", "ac_tranHandle"),
    "IIAPI_CANCELPARM": ("cn_stmtHandle",),
    "IIAPI_CATCHEVENTPARM": (
        "ce_connHandle", "ce_selectEventName", "ce_selectEventOwner", "ce_eventHandle",
        "ce_eventName", "ce_eventOwner", "ce_eventDB", "ce_eventTime", "ce_eventInfoAvail",
    ),
    "IIAPI_CLOSEPARM": ("cl_stmtHandle",),
    "IIAPI_CONNPARM": (
        "co_target", "co_username", "co_password", "co_timeout", "co_connHandle",
        "co_tranHandle", "co_sizeAdvise", "co_apiLevel", "co_type",
    ),
    "IIAPI_CONVERTPARM": ("cv_srcDesc", "cv_srcValue", "cv_dstDesc", "cv_dstValue", "cv_status"),
    "IIAPI_DISCONNPARM": ("dc_connHandle",),
    "IIAPI_FORMATPARM": (
        "fd_envHandle", "fd_srcDesc", "fd_srcValue", "fd_dstDesc", "fd_dstValue", "fd_status",
    ),
    "IIAPI_GETCOLPARM": (
        "gc_stmtHandle", "gc_rowCount", "gc_columnCount", "gc_columnData", "gc_rowsReturned",
        "gc_moreSegments",
    ),
    "IIAPI_GETCOLINFOPARM": ("gi_stmtHandle", "gi_columnNumber", "gi_status", "gi_mask"),
    "IIAPI_GETDESCRPARM": ("gd_stmtHandle", "gd_descriptorCount", "gd_descriptor"),
    "IIAPI_GETEINFOPARM": (
        "ge_errorHandle", "ge_type", "ge_SQLSTATE", "ge_errorCode", "ge_message",
        "ge_serverInfoAvail", "ge_serverInfo", "ge_status",
    ),
    "IIAPI_GETEVENTPARM": ("gv_connHandle", "gv_timeout"),
    "IIAPI_GETQINFOPARM": (
        "gq_stmtHandle", "gq_flags", "gq_mask", "gq_rowCount", "gq_readonly",
        "gq_procedureReturn", "gq_procedureHandle", "gq_repeatQueryHandle", "gq_tableKey",
        "gq_objectKey", "gq_cursorType", "gq_rowStatus", "gq_rowPosition", "gq_rowCountEx",
    ),
    "IIAPI_INITPARM": ("in_timeout", "in_version", "in_status", "in_envHandle"),
    "IIAPI_QUERYPARM": (
        "qy_connHandle", "qy_queryType", "qy_queryText", "qy_parameters", "qy_tranHandle",
        "qy_stmtHandle", "qy_flags",
    ),
    "IIAPI_RELENVPARM": ("re_envHandle", "re_status"),
    "IIAPI_SETCONPRMPARM": ("sc_connHandle", "sc_paramID", "sc_paramValue"),
    "IIAPI_SETENVPRMPARM": ("se_envHandle", "se_paramID", "se_paramValue", "se_status"),
    "IIAPI_TERMPARM": ("tm_status",),
    "IIAPI_WAITPARM": ("wt_timeout", "wt_status"),
    "IIAPI_TRAN_ID": ("ti_type", "ti_value"),
    "IIAPI_REGXIDPARM": ("rg_tranID", "rg_tranIdHandle", "rg_status"),
    "IIAPI_RELXIDPARM": ("rl_tranIdHandle", "rl_status"),
    "IIAPI_EVENTPARM": (
        "ev_envHandle", "ev_connHandle", "ev_eventName", "ev_eventOwner", "ev_eventDB",
        "ev_eventTime",
    ),
}


def _layout_program() -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include HEADER", "int main(void) {"]
    for block, fields in _BLOCKS.items():
        lines.append(f'    printf("{block} %zu\\n", sizeof({block}));')
        lines.extend(
            f'    printf("{block}.{f} %zu\\n", offsetof({block}, {f}));' for f in fields
        )
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


def _layout(tmp_path: Path, name: str, header: Path) -> dict[str, int]:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler is not None, "a C compiler is needed to read iiapi.h's layout"
    source = tmp_path / f"{name}.c"
    source.write_text(_layout_program())
    binary = tmp_path / name
    subprocess.run(
        [compiler, f'-DHEADER="{header.name}"', f"-I{header.parent}", "-o", str(binary),
         str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {key: int(value) for key, value in (line.split() for line in out.splitlines())}


def _pyngres_layout() -> dict[str, int]:
    out: dict[str, int] = {}
    for block, fields in _BLOCKS.items():
        struct = getattr(py, block)
        out[block] = ctypes.sizeof(struct)
        out.update({f"{block}.{f}": getattr(struct, f).offset for f in fields})
    return out


def test_parameter_blocks_are_laid_out_as_the_real_iiapi_h(
    real_ii_system: Path, tmp_path: Path
) -> None:
    header = real_ii_system / "ingres" / "files" / "iiapi.h"
    assert header.is_file(), f"{header}: the installation has no OpenAPI header"
    real = _layout(tmp_path, "real", header)
    simulated = _layout(tmp_path, "sim", SOURCE_DIR / "iiapi_sim.h")
    assert {k: v for k, v in simulated.items() if real[k] != v} == {}
    pyngres = _pyngres_layout()
    assert {k: v for k, v in pyngres.items() if real[k] != v} == {}


def test_event_parameter_block_has_its_version_note(real_ii_system: Path) -> None:
    """The version-gated fields the simulator honours are those iiapi.h marks."""
    text = (real_ii_system / "ingres" / "files" / "iiapi.h").read_text(errors="replace")
    block = text[text.index("typedef struct _IIAPI_GETQINFOPARM") :]
    block = block[: block.index("} IIAPI_GETQINFOPARM;")]
    notes = re.findall(r"Version (\d+) parameters \*/\s+(\w+)\s+(\w+);", block)
    assert ("10", "II_INT8", "gq_rowCountEx") in notes


@pytest.mark.amqp
def test_check_config_names_the_real_libraries_error(
    real_ii_system: Path, amqp_url: str, tmp_path: Path
) -> None:
    """The bridge's own Session through the real library: its error reaches the operator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("II_", "BRIDGE_"))}
    env |= {
        "II_SYSTEM": str(real_ii_system),
        "BRIDGE_INGRES__TARGET": f"@127.0.0.1,tcp_ip,{_closed_port()}[ingres,t0psecret]::demodb",
        "BRIDGE_INGRES__EVENTS": "order_created",
        "BRIDGE_AMQP__URL": amqp_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "SQLSTATE 08004" in done.stderr
    assert "Unable to make outgoing connection" in done.stderr
    assert "t0psecret" not in done.stdout + done.stderr
