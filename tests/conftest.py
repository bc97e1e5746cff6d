"""Fixtures shared by every test: the RabbitMQ broker under test.

Where the broker comes from, in order: `BRIDGE_TEST_AMQP_URL`; else a
testcontainers RabbitMQ when a Docker engine answers; else the test is skipped,
except under `CI=true`, where a missing broker is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import pytest
import stamina

from bridge.sim.build import ensure_ii_system

DEFAULT_LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/"


def use_simulated_ii_system() -> str:
    """Build (or reuse) the simulator's libiiapi.1.so and point II_SYSTEM at it.

    `import pyngres` reads II_SYSTEM at import time and exits the process when
    it is unset, so this runs when the root conftest is imported, before any
    test module can import pyngres.
    """
    path = str(ensure_ii_system())
    os.environ["II_SYSTEM"] = path
    return path


use_simulated_ii_system()

REAL_II_SYSTEM_VARIABLE = "BRIDGE_TEST_REAL_II_SYSTEM"
# The test suite's own BRIDGE_TEST_ variables are taken out of the environment
# here, once: the bridge rejects BRIDGE_ names it does not know (a typo must
# not pass silently), and every bridge a test starts inherits this environment.
_TEST_AMQP_URL = os.environ.pop("BRIDGE_TEST_AMQP_URL", "")
_REAL_II_SYSTEM = os.environ.pop(REAL_II_SYSTEM_VARIABLE, "")


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            return True
    except OSError:
        return False


def _docker_socket_accepts(docker_host: str) -> bool:
    """Whether the Docker engine's endpoint takes a connection at all."""
    parts = urlsplit(docker_host)
    if parts.scheme != "unix":
        return True  # tcp://, ssh://: the docker library's own ping decides
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(parts.path)
        except OSError:
            return False
    return True


def _docker_answers() -> bool:
    # The docker library leaves its socket open when the engine's socket refuses
    # the connection (even in `from_env`), and under filterwarnings = error that
    # ResourceWarning fails the test; so the socket is probed here first.
    if not _docker_socket_accepts(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")):
        return False
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env()
    except Exception:
        return False
    try:
        client.ping()
    except Exception:
        return False
    finally:
        client.close()
    return True


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """The URL of a real RabbitMQ broker (see module docstring for where it comes from)."""
    url = _TEST_AMQP_URL
    if url:
        if not _answers(url):
            pytest.fail(f"BRIDGE_TEST_AMQP_URL={url} does not answer; start the broker")
        yield url
        return
    if _docker_answers():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3-management") as container:
            params = container.get_connection_params()
            host, port = params.host, params.port
            yield f"amqp://guest:guest@{host}:{port}/"
        return
    message = (
        "no RabbitMQ broker: set BRIDGE_TEST_AMQP_URL (e.g. "
        f"{DEFAULT_LOCAL_URL}) or run a Docker engine"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_ii_system() -> Path:
    """II_SYSTEM of a real Actian/Ingres client installation, for `real_client` tests.

    Opt-in: Actian's library is under Actian's commercial licence, so nothing here
    downloads it; a user who accepts that licence points BRIDGE_TEST_REAL_II_SYSTEM
    at an installation (README, "Running against a real Ingres"). pyngres loads one
    library per process, so tests run the real library in child processes.
    """
    value = _REAL_II_SYSTEM
    if not value:
        pytest.skip(f"{REAL_II_SYSTEM_VARIABLE} is not set: no real OpenAPI library")
    path = Path(value)
    library = path / "ingres" / "lib" / "libiiapi.1.so"
    if not library.is_file():
        pytest.fail(f"{REAL_II_SYSTEM_VARIABLE}={value}: {library} does not exist")
    return path


@pytest.fixture
def unique_name() -> str:
    """A name no other test (or earlier run) uses: for exchanges and queues."""
    return f"test.{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def amqp_connection(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A plain aio-pika connection for the test's own inspection of the broker."""
    connection = await aio_pika.connect(amqp_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def retry_waits() -> Iterator[list[float]]:
    """The wait before each retry, in order, as stamina reports it to its hooks."""
    recorded: list[float] = []
    before = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([lambda details: recorded.append(details.wait_for)])
    yield recorded
    stamina.instrumentation.set_on_retry_hooks(before)
