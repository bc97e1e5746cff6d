"""The bridge as a real process (`python -m bridge run`), configured by environment variables.

`BridgeProcess` starts it with the test's settings (BRIDGE_* variables; the
inherited II_SYSTEM points at the simulator's OpenAPI library), reads its
/metrics and /readyz on a free loopback port, and stops it with SIGTERM or
SIGKILL. Its output goes to a log file, shown when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.polling import wait_until


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bridge_env(
    tmp_path: Path, *, target: str, amqp_url: str, exchange: str, spool: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a test bridge process: quick reconnects, console logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update({
        "BRIDGE_INGRES__TARGET": target,
        "BRIDGE_INGRES__EVENTS": "order_created",
        "BRIDGE_INGRES__RECONNECT_BACKOFF_MIN": "0.05",
        "BRIDGE_INGRES__RECONNECT_BACKOFF_MAX": "0.5",
        "BRIDGE_INGRES__GET_EVENT_TIMEOUT": "0.2",
        "BRIDGE_AMQP__URL": amqp_url,
        "BRIDGE_AMQP__EXCHANGE": exchange,
        "BRIDGE_SPOOL__PATH": str(spool),
        "BRIDGE_LOG__FORMAT": "console",
        "BRIDGE_SECRETS_DIR": str(tmp_path / "no-secrets"),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


class BridgeProcess:
    """One `python -m bridge run` process; `start()` again after it ended for a restart."""

    def __init__(self, env: Mapping[str, str], cwd: Path, log: Path) -> None:
        self.port = free_port()
        self.env = {**env, "BRIDGE_HTTP__LISTEN": f"127.0.0.1:{self.port}"}
        self.cwd = cwd
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.peak_rss_kib = 0

    def start(self) -> BridgeProcess:
        """Start the process (the previous one must have ended)."""
        assert self.process is None or self.process.poll() is not None
        with self.log.open("ab") as out:
            out.write(f"--- start #{self.starts + 1} ---\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run"], env=self.env, cwd=self.cwd,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[str, float]:
        """The /metrics samples by name (labels kept in the name), e.g. `..._caught_total`."""
        _, text = self._get("/metrics")
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        self.sample_rss()
        return samples

    def counter(self, name: str) -> float:
        """One counter of /metrics by its short name (`events_caught` → its _total).

        Summed over its label values (every database's `events_caught`).
        """
        base = f"dbevent_bridge_{name}_total"
        return sum(value for sample, value in self.metrics().items()
                   if sample == base or sample.startswith(base + "{"))

    def readiness(self) -> tuple[int, str]:
        """The /readyz status and body (which side is not ready, and why)."""
        return self._get("/readyz")

    def readyz(self) -> tuple[int, str]:
        """/readyz as (status, body); (0, "") while nothing answers."""
        try:
            return self._get("/readyz")
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        """True when /readyz says Ingres and RabbitMQ are both connected."""
        try:
            return self._get("/readyz")[0] == 200
        except OSError:
            return False

    def role(self) -> str | None:
        """The active/standby role /readyz reports (None: not in that mode, or not answering)."""
        try:
            _, text = self._get("/readyz")
        except OSError:
            return None
        role = json.loads(text).get("role")
        return role if isinstance(role, str) else None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until ready; fail with the log's tail if the process ended or never got there."""
        if wait_until(lambda: self.ready() or not self.running(), timeout) and self.ready():
            return
        if not self.running():
            raise AssertionError(f"the bridge exited ({self.returncode()}):\n{self.tail()}")
        raise AssertionError(f"the bridge was not ready in {timeout:.0f} s:\n{self.tail()}")

    def sample_rss(self) -> int:
        """Read the process's peak resident set size (VmHWM, KiB); kept in `peak_rss_kib`."""
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
        return self.peak_rss_kib

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.process is not None
        self.sample_rss()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def send(self, signum: int) -> None:
        """Send `signum` to the running process."""
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for the process to end; returns the exit status."""
        assert self.process is not None
        return self.process.wait(timeout)

    def logged(self, text: str) -> bool:
        """Whether the process's output so far contains `text`."""
        with contextlib.suppress(OSError):
            return text in self.log.read_text(errors="replace")
        return False

    def kill(self) -> None:
        """SIGKILL (a crash) and reap it."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def returncode(self) -> int | None:
        """The exit status, None while running."""
        return None if self.process is None else self.process.poll()

    def tail(self, lines: int = 40) -> str:
        """The end of the process's output."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def close(self) -> None:
        """Kill the process if it still runs (end of a test, whatever happened)."""
        if self.running():
            self.kill()
