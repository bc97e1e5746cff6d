"""A private RabbitMQ node for tests that must stop, start or reconfigure a broker.

The machine's own broker (rabbit@localhost on 127.0.0.1:5672) is shared by every
test and every engineer and is never touched. A `RabbitNode` is a second,
throw-away broker of the installed rabbitmq-server with everything of its own:

* node name `test-<random>@localhost`, and free loopback ports chosen at run
  time for AMQP, AMQPS, Erlang distribution and epmd;
* its own epmd (a child process of ours, not a daemon), so nothing outlives it;
* data, logs, config and an empty enabled-plugins file (no management plugin,
  no port clashes) in a fresh directory under the system temp dir;
* its own Erlang cookie in its own HOME, shared with the rabbitmqctl that
  `ctl()` runs. Debian's /usr/sbin wrappers are bypassed: as root they `su` to
  `rabbitmq`, which resets HOME (and with it the cookie) and, for the server,
  sends its output to /var/log/rabbitmq. We run the real scripts beside the
  wrapper directly, as the `rabbitmq` user when we are root (the broker refuses
  nothing as root, but its files then belong to the right user, as in
  production), else as ourselves.

`stop()` is graceful (SIGTERM: the start script turns it into a clean shutdown),
`kill()` is a crash (SIGKILL); `start()` brings the node back on the same ports
with the same data, so clients reconnect to the same URL. On `close()` (or
leaving the `with` block, whatever the test did) the node and its epmd are
stopped, the broker's log is copied into the directory given to the
constructor (pytest keeps it for post-mortems) and the data is removed.

Fixtures: `rabbit_node` (one node per test) and `rabbit_node_factory` (start
any number per module, all stopped at its end). Import them into a conftest or
a test module.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from tests.polling import wait_until

__all__ = [
    "RabbitNode",
    "RabbitNodeError",
    "TlsFiles",
    "rabbit_node",
    "rabbit_node_factory",
    "rabbitmq_server_available",
    "require_rabbitmq_server",
]

START_TIMEOUT = 90.0  # seconds; about 5 s on an idle 2-core machine, more under load
STOP_TIMEOUT = 60.0

# AMQP 0-9-1 protocol header; a broker that is up answers with a Connection.Start
# method frame, whose first byte is the frame type 1.
_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


class RabbitNodeError(RuntimeError):
    """The private node did not start, stop or answer as it should."""


@dataclass(frozen=True)
class TlsFiles:
    """The broker's side of TLS: its CA, certificate and key (PEM files).

    verify_peer: ask clients for a certificate signed by `ca_file` and refuse
    those without (`ssl_options.verify = verify_peer`, `fail_if_no_peer_cert`).
    addresses: the loopback addresses the AMQPS listener binds to, all on one
    port (several: to reach one node by an address its certificate lacks).
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    verify_peer: bool = True
    addresses: Sequence[str] = ("127.0.0.1",)


def _scripts_dir() -> Path | None:
    """Where the real rabbitmq-server and rabbitmqctl scripts are, if installed."""
    found = shutil.which("rabbitmq-server") or shutil.which(
        "rabbitmq-server", path="/usr/sbin:/usr/local/sbin"
    )
    if found is None:
        return None
    # Debian's /usr/sbin/rabbitmq-server links to rabbitmq-script-wrapper; the
    # scripts it runs sit beside it. Elsewhere this is the script itself.
    real = Path(found).resolve().parent
    return real if (real / "rabbitmqctl").exists() else None


def rabbitmq_server_available() -> bool:
    """True when rabbitmq-server and epmd are installed, so that a node can start."""
    return _scripts_dir() is not None and shutil.which("epmd") is not None


def _free_port() -> int:
    """A TCP port nobody listens on now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) of the `rabbitmq` user when we are root and it exists; else None (us)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("rabbitmq")
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _amqp_answers(port: int) -> bool:
    """True when a broker on 127.0.0.1:`port` answers the AMQP protocol header."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(_AMQP_HEADER)
            return sock.recv(1) == b"\x01"
    except OSError:
        return False


def _tcp_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


class RabbitNode:
    """A private RabbitMQ node; see the module docstring. Use it as a context manager."""

    def __init__(self, logs_dir: Path, tls: TlsFiles | None = None) -> None:
        """Prepare (not start) a node; its broker log ends up in `logs_dir` on close."""
        scripts = _scripts_dir()
        if scripts is None or shutil.which("epmd") is None:
            raise RabbitNodeError("rabbitmq-server (and Erlang's epmd) is not installed")
        self._scripts = scripts
        self._logs_dir = logs_dir
        self._tls = tls
        self._owner = _run_as()
        self.node_name = f"test-{secrets.token_hex(4)}@localhost"
        self.port = _free_port()
        self.tls_port = _free_port() if tls else None
        self._dist_port = _free_port()
        self._epmd_port = _free_port()
        _reap_abandoned_nodes()
        self._base = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        (self._base / _OWNER_FILE).write_text(str(os.getpid()))
        self._server: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._prepare_files()
        _LIVE.add(self)

    # -- addresses -------------------------------------------------------

    @property
    def url(self) -> str:
        """Plain AMQP URL of the node (guest/guest, vhost /)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def amqps_url(self) -> str:
        """AMQPS URL of the node on its first TLS address; only with `tls`."""
        if self._tls is None or self.tls_port is None:
            raise RabbitNodeError("this node was started without TLS")
        return f"amqps://guest:guest@{self._tls.addresses[0]}:{self.tls_port}/"

    @property
    def log_file(self) -> Path:
        """The broker's own log file (while the node exists)."""
        return self._base / "log" / f"{self.node_name}.log"

    @property
    def running(self) -> bool:
        """True while the broker process runs (it may still be booting)."""
        return self._server is not None and self._server.poll() is None

    # -- files and environment -------------------------------------------

    def _prepare_files(self) -> None:
        """Create the node's HOME, cookie, config and folders, owned by the node's user."""
        for sub in ("home", "mnesia", "log", "tls"):
            (self._base / sub).mkdir()
        cookie = self._base / "home" / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        (self._base / "enabled_plugins").write_text("[].\n")
        # An env file of our own, so /etc/rabbitmq/rabbitmq-env.conf (which names
        # the machine's node) is not read.
        (self._base / "rabbitmq-env.conf").write_text("")
        (self._base / "rabbitmq.conf").write_text(self._config())
        if self._owner is not None:
            uid, gid = self._owner
            for path in [self._base, *self._base.rglob("*")]:
                os.chown(path, uid, gid)
        self._base.chmod(0o700)

    def _config(self) -> str:
        """rabbitmq.conf: loopback listeners only, plus the TLS listener and options."""
        lines = [
            f"listeners.tcp.1 = 127.0.0.1:{self.port}",
            "log.console = false",
            "log.file.level = info",
        ]
        if self._tls is not None:
            lines += self._tls_config(self._tls)
        return "\n".join(lines) + "\n"

    def _tls_config(self, tls: TlsFiles) -> list[str]:
        """The TLS lines of rabbitmq.conf; the PEM files are copied where the node can read them."""
        copies = {}
        for name, source in (("ca", tls.ca_file), ("cert", tls.cert_file), ("key", tls.key_file)):
            copies[name] = self._base / "tls" / f"{name}.pem"
            shutil.copyfile(source, copies[name])
        lines = [
            f"listeners.ssl.{i} = {address}:{self.tls_port}"
            for i, address in enumerate(tls.addresses, start=1)
        ]
        lines += [
            f"ssl_options.cacertfile = {copies['ca']}",
            f"ssl_options.certfile = {copies['cert']}",
            f"ssl_options.keyfile = {copies['key']}",
        ]
        if tls.verify_peer:
            lines += ["ssl_options.verify = verify_peer", "ssl_options.fail_if_no_peer_cert = true"]
        else:
            lines += ["ssl_options.verify = verify_none"]
        return lines

    def _env(self) -> dict[str, str]:
        """The environment of the node and of its rabbitmqctl: everything private."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))
        }
        base = self._base
        env.update(
            HOME=str(base / "home"),  # where Erlang finds (and the CLI too) the cookie
            LANG="C.UTF-8",
            LC_ALL="C.UTF-8",
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self._dist_port),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            ERL_EPMD_PORT=str(self._epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            # Erlang distribution listens on all interfaces unless told otherwise.
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _popen(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        """Start `argv` as the node's user in a session of its own, output to a log file."""
        user: dict[str, Any] = {}
        if self._owner is not None:
            user = {"user": self._owner[0], "group": self._owner[1], "extra_groups": []}
        with (self._base / log_name).open("ab") as out:
            return subprocess.Popen(
                argv, env=self._env(), cwd=self._base, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **user,
            )

    # -- life cycle ------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the broker (and epmd, the first time); return once it accepts AMQP."""
        if self._closed:
            raise RabbitNodeError("this node was closed")
        if self.running:
            return
        self._start_epmd()
        self._server = self._popen([str(self._scripts / "rabbitmq-server")], "server.out")
        self._await_startup(timeout)

    def _start_epmd(self) -> None:
        """Our own epmd, in the foreground as our child: a daemon one would outlive us."""
        if self._epmd is not None and self._epmd.poll() is None:
            return
        epmd = shutil.which("epmd") or "epmd"
        self._epmd = self._popen(
            [epmd, "-port", str(self._epmd_port), "-address", "127.0.0.1"], "epmd.out"
        )
        self._wait_for(lambda: _tcp_answers("127.0.0.1", self._epmd_port), 15, "epmd", self._epmd)

    def _await_startup(self, timeout: float) -> None:
        """Wait for the AMQP (and AMQPS) listeners, which open once the boot is done."""
        def up() -> bool:
            if not _amqp_answers(self.port):
                return False
            return self._tls is None or all(
                _tcp_answers(address, self.tls_port or 0) for address in self._tls.addresses
            )

        try:
            self._wait_for(up, timeout, "the broker", self._server)
        except RabbitNodeError:
            self._kill_server()
            raise

    def _wait_for(
        self,
        check: Callable[[], bool],
        timeout: float,
        what: str,
        process: subprocess.Popen[bytes] | None,
    ) -> None:
        """Poll `check` until it holds; fail early if `process` exits, or at `timeout`."""
        def exited() -> bool:
            return process is not None and process.poll() is not None

        if wait_until(lambda: check() or exited(), timeout, every=0.1) and check():
            return
        if exited():
            raise RabbitNodeError(f"{what} exited during start-up\n{self._tail()}")
        raise RabbitNodeError(f"{what} did not come up in {timeout:.0f} s\n{self._tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Shut the broker down cleanly (as `rabbitmqctl stop` would); data is kept."""
        server = self._server
        if server is None or server.poll() is not None:
            self._server = None
            return
        # The start script traps SIGTERM and stops the VM gracefully.
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_server()
            message = f"the broker did not stop in {timeout:.0f} s; killed it"
            raise RabbitNodeError(message) from None
        self._server = None

    def kill(self) -> None:
        """Crash the broker (SIGKILL, no shutdown at all): what a power cut looks like."""
        self._kill_server()

    def _kill_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if server.poll() is None:
            # Still unreaped, so the process group is certainly ours: the start
            # script, the Erlang VM and its port programs all go.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
        server.wait()

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run `rabbitmqctl -n <node> ARGS` against this node; return its output."""
        user: dict[str, Any] = {}
        if self._owner is not None:
            user = {"user": self._owner[0], "group": self._owner[1], "extra_groups": []}
        done = subprocess.run(
            [str(self._scripts / "rabbitmqctl"), "-n", self.node_name, *args],
            env=self._env(), cwd=self._base, capture_output=True, text=True,
            timeout=timeout, check=False, **user,
        )
        if done.returncode != 0:
            raise RabbitNodeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
        output: str = done.stdout
        return output

    def close(self) -> None:
        """Stop the node (killing it if need be) and its epmd; keep the log; drop the data."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        try:
            self.stop()
        except RabbitNodeError:
            pass  # stop() killed it already; nothing is left running
        finally:
            self._kill_server()
            self._stop_epmd()
            _kill_processes_of(self._base)  # port programs or anything else left over
            self._keep_logs()
            shutil.rmtree(self._base, ignore_errors=True)

    def _stop_epmd(self) -> None:
        epmd, self._epmd = self._epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.terminate()
            try:
                epmd.wait(10)
            except subprocess.TimeoutExpired:
                epmd.kill()
                epmd.wait()

    def _keep_logs(self) -> None:
        """Copy the broker's logs into logs_dir, for a look after a failed test."""
        with contextlib.suppress(OSError):
            target = self._logs_dir / self.node_name.split("@")[0]
            target.mkdir(parents=True, exist_ok=True)
            for log in [*(self._base / "log").glob("*.log"), self._base / "server.out"]:
                if log.exists():
                    shutil.copyfile(log, target / log.name)

    def _tail(self, lines: int = 30) -> str:
        """The end of the broker's log and console output, for error messages."""
        texts = []
        for path in (self._base / "server.out", self.log_file):
            with contextlib.suppress(OSError):
                texts.append("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(texts)

    def __enter__(self) -> Self:
        """Start the node; it is closed on leaving the block, whatever happened."""
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the node."""
        self.close()


# A test process killed outright (SIGKILL, a CI time-out) cannot close its
# nodes; the next RabbitNode cleans up after it. A node's directory records the
# pid of the process that owns it, and every process of a node has the node's
# HOME in its environment, which is how they are told apart from anything else.
_DIR_PREFIX = "rabbitnode-"
_OWNER_FILE = "owner.pid"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_processes_of(base: Path) -> None:
    """SIGKILL every process whose environment has HOME=<base>/home: that node's, only."""
    marker = f"HOME={base / 'home'}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if marker in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _reap_abandoned_nodes() -> None:
    """Kill and remove the nodes of test processes that died without closing them."""
    for base in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*"):
        try:
            owner = int((base / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # being set up right now, or not one of ours
        if _pid_alive(owner):
            continue
        _kill_processes_of(base)
        shutil.rmtree(base, ignore_errors=True)


# Nodes not closed yet: closed at interpreter exit as a last resort (a test
# runner stopped by Ctrl-C between set-up and teardown), never left running.
_LIVE: set[RabbitNode] = set()


@atexit.register
def _close_leftovers() -> None:
    for node in list(_LIVE):
        node.close()


def require_rabbitmq_server() -> None:
    """Skip without rabbitmq-server installed; under CI=true that is a failure."""
    if rabbitmq_server_available():
        return
    message = "rabbitmq-server is not installed: no private RabbitMQ node for this test"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def rabbit_node(tmp_path: Path) -> Iterator[RabbitNode]:
    """A started private node for one test (which may stop, kill and start it)."""
    require_rabbitmq_server()
    with RabbitNode(tmp_path) as node:
        yield node


@pytest.fixture(scope="module")
def rabbit_node_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RabbitNode]]:
    """`make(tls=None) -> RabbitNode`: start private nodes; all closed at the module's end."""
    require_rabbitmq_server()
    nodes: list[RabbitNode] = []

    def make(tls: TlsFiles | None = None) -> RabbitNode:
        node = RabbitNode(tmp_path_factory.mktemp("rabbit"), tls)
        nodes.append(node)
        node.start()
        return node

    try:
        yield make
    finally:
        for node in nodes:
            node.close()
