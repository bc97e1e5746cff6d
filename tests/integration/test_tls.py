"""TLS to RabbitMQ with a real broker: trust, host names, client certificates, reconnects.

One private node per module (tests/rabbitnode.py) with an AMQPS listener that
asks for a client certificate, reachable on 127.0.0.1 (named in its certificate)
and 127.0.0.2 (not named: the "wrong host" case). Certificates are made afresh
per run with `cryptography`.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
from aiormq.exceptions import AMQPConnectionError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from yarl import URL

from bridge.metrics import Metrics
from bridge.publisher import Publisher, PublisherStartupError
from bridge.settings import AmqpSettings
from bridge.tls import TlsConfigError, build_ssl_context, tls_failure_hint
from tests.rabbitnode import RabbitNode, TlsFiles, require_rabbitmq_server

Key = ec.EllipticCurvePrivateKey

# --- a throw-away PKI ------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA, the broker's certificate, the bridge's client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # a CA that signed nothing the broker shows


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: Key,
    issuer: tuple[str, Key] | None = None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    """A certificate for `key`, signed by `issuer` (name, key) or by itself."""
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Key | None = None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_suffix(".key")
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


def _make_pki(folder: Path) -> Pki:
    ca_key, rogue_key, server_key, client_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(4)
    )
    ca = ("dbevent-bridge test CA", ca_key)
    _write(folder / "ca.pem", _certificate(ca[0], ca_key, ca=True))
    _write(folder / "rogue-ca.pem", _certificate("rogue CA", rogue_key, ca=True))
    server = _certificate(
        "localhost", server_key, ca,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    _write(folder / "server.pem", server, server_key)
    client = _certificate("bridge", client_key, ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    _write(folder / "client.pem", client, client_key)
    return Pki(
        ca=folder / "ca.pem", server_cert=folder / "server.pem",
        server_key=folder / "server.key", client_cert=folder / "client.pem",
        client_key=folder / "client.key", rogue_ca=folder / "rogue-ca.pem",
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """One TLS node for the module, on 127.0.0.1 (in its certificate) and 127.0.0.2 (not)."""
    require_rabbitmq_server()
    tls = TlsFiles(
        pki.ca, pki.server_cert, pki.server_key, verify_peer=True,
        addresses=("127.0.0.1", "127.0.0.2"),
    )
    with RabbitNode(tmp_path_factory.mktemp("rabbit"), tls) as started:
        yield started


def _url_on(node: RabbitNode, host: str) -> str:
    return str(URL(node.amqps_url).with_host(host))


async def _publish_confirmed(connection: aio_pika.abc.AbstractConnection) -> bytes:
    """Publish one message with a publisher confirm, and read it back."""
    channel = await connection.channel(publisher_confirms=True)
    queue = await channel.declare_queue(exclusive=True)
    confirmation = await channel.default_exchange.publish(
        aio_pika.Message(b"over tls"), routing_key=queue.name, mandatory=True
    )
    assert confirmation is not None
    message = await queue.get(timeout=10)
    await message.ack()
    return message.body


async def _connect_and_close(url: str, context: ssl.SSLContext) -> None:
    connection = await aio_pika.connect(url, ssl_context=context, timeout=20)
    await connection.close()


async def _refused(url: str, context: ssl.SSLContext) -> AMQPConnectionError:
    """Connect, expecting TLS to fail; return the error."""
    with pytest.raises(AMQPConnectionError) as caught:
        await _connect_and_close(url, context)
    return caught.value


# --- against the broker --------------------------------------------------


@pytest.mark.amqp
async def test_verified_connection_publishes_with_confirm(node: RabbitNode, pki: Pki) -> None:
    context = build_ssl_context(pki.ca, pki.client_cert, pki.client_key)
    connection = await aio_pika.connect(node.amqps_url, ssl_context=context, timeout=20)
    try:
        assert await _publish_confirmed(connection) == b"over tls"
    finally:
        await connection.close()


@pytest.mark.amqp
@pytest.mark.parametrize("verify_hostname", [True, False])
async def test_wrong_ca_is_refused(node: RabbitNode, pki: Pki, verify_hostname: bool) -> None:
    context = build_ssl_context(pki.rogue_ca, pki.client_cert, pki.client_key, verify_hostname)
    error = await _refused(node.amqps_url, context)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    hint = tls_failure_hint(error)
    assert hint is not None
    assert "ca_file" in hint


@pytest.mark.amqp
async def test_publisher_start_names_the_setting_to_fix(node: RabbitNode, pki: Pki) -> None:
    """The operator sees the hint in the start-up error, and retrying is not offered."""
    amqp = AmqpSettings.model_validate({
        "url": node.amqps_url, "exchange": "tls.hint",
        "tls": {"ca_file": pki.rogue_ca, "cert_file": pki.client_cert,
                "key_file": pki.client_key},
    })
    publisher = Publisher(amqp, Metrics())
    with pytest.raises(PublisherStartupError) as caught:
        await publisher.start()
    await publisher.close()
    assert "certificate is not trusted" in str(caught.value)
    assert "amqp.tls.ca_file must hold the CA that signed it" in str(caught.value)
    assert caught.value.transient is False


@pytest.mark.amqp
async def test_host_not_in_certificate_is_refused(node: RabbitNode, pki: Pki) -> None:
    context = build_ssl_context(pki.ca, pki.client_cert, pki.client_key)
    error = await _refused(_url_on(node, "127.0.0.2"), context)
    assert "IP address mismatch" in str(error)
    hint = tls_failure_hint(error)
    assert hint is not None
    assert "server_name" in hint


@pytest.mark.amqp
async def test_server_name_override_matching_the_certificate_works(
    node: RabbitNode, pki: Pki
) -> None:
    context = build_ssl_context(
        pki.ca, pki.client_cert, pki.client_key, verify_hostname=True, server_name="localhost"
    )
    connection = await aio_pika.connect(_url_on(node, "127.0.0.2"), ssl_context=context, timeout=20)
    try:
        assert await _publish_confirmed(connection) == b"over tls"
    finally:
        await connection.close()


@pytest.mark.amqp
async def test_server_name_override_not_in_certificate_is_refused(
    node: RabbitNode, pki: Pki
) -> None:
    context = build_ssl_context(
        pki.ca, pki.client_cert, pki.client_key, server_name="rabbit.example"
    )
    error = await _refused(node.amqps_url, context)  # 127.0.0.1 is in it, but not checked
    assert "Hostname mismatch" in str(error)


@pytest.mark.amqp
async def test_verify_hostname_off_accepts_any_name_but_still_the_chain(
    node: RabbitNode, pki: Pki
) -> None:
    context = build_ssl_context(pki.ca, pki.client_cert, pki.client_key, verify_hostname=False)
    connection = await aio_pika.connect(_url_on(node, "127.0.0.2"), ssl_context=context, timeout=20)
    try:
        assert await _publish_confirmed(connection) == b"over tls"
    finally:
        await connection.close()


@pytest.mark.amqp
async def test_broker_refuses_a_client_without_certificate(node: RabbitNode, pki: Pki) -> None:
    context = build_ssl_context(pki.ca, None, None)
    # In TLS 1.3 the broker refuses after the client's side of the handshake:
    # the client reads either the broker's alert or, when the broker has
    # closed first, a reset. Both are refusals; which one is a race.
    error = await _refused(node.amqps_url, context)
    message = str(error)
    assert "CERTIFICATE_REQUIRED" in message or "reset" in message


@pytest.mark.amqp
async def test_robust_connection_reconnects_over_tls_after_a_broker_restart(
    node: RabbitNode, pki: Pki
) -> None:
    context = build_ssl_context(pki.ca, pki.client_cert, pki.client_key)
    connection = await aio_pika.connect_robust(
        node.amqps_url, ssl_context=context, timeout=20, reconnect_interval=0.5
    )
    try:
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda *_: reconnected.set())
        await asyncio.to_thread(node.stop)
        await asyncio.to_thread(node.start)
        await asyncio.wait_for(reconnected.wait(), 60)
        assert await _publish_confirmed(connection) == b"over tls"
    finally:
        await connection.close()


# --- without a broker: settings errors ------------------------------------


def test_missing_ca_file_names_setting_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    expected = rf"ca_file: cannot read {re.escape(str(missing))}: No such file"
    with pytest.raises(TlsConfigError, match=expected):
        build_ssl_context(missing, None, None)


def test_garbage_ca_file(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TlsConfigError, match=r"ca_file: .* holds no usable PEM certificate"):
        build_ssl_context(garbage, None, None)


def test_unreadable_client_key(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="key_file: cannot read"):
        build_ssl_context(pki.ca, pki.client_cert, tmp_path / "client.key")


def test_key_without_certificate(pki: Pki) -> None:
    with pytest.raises(TlsConfigError, match="key_file is set but cert_file is not"):
        build_ssl_context(pki.ca, "", pki.client_key)


def test_key_not_matching_certificate(pki: Pki) -> None:
    with pytest.raises(TlsConfigError, match="cert_file/key_file: cannot load"):
        build_ssl_context(pki.ca, pki.client_cert, pki.server_key)


def test_encrypted_key_is_refused_not_prompted_for(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass phrase"),
        )
    )
    with pytest.raises(TlsConfigError, match="is encrypted"):
        build_ssl_context(pki.ca, pki.client_cert, encrypted)


def test_key_inside_certificate_file(pki: Pki, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pki.client_cert.read_bytes() + pki.client_key.read_bytes())
    context = build_ssl_context(pki.ca, combined, None)
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_context_defaults_are_strict(pki: Pki) -> None:
    context = build_ssl_context(pki.ca, None, None)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    relaxed = build_ssl_context(pki.ca, None, None, verify_hostname=False)
    assert relaxed.verify_mode == ssl.CERT_REQUIRED
    assert relaxed.check_hostname is False


def test_system_cas_without_ca_file() -> None:
    context = build_ssl_context(None, None, None)
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_failure_hint_is_none_for_other_errors() -> None:
    assert tls_failure_hint(ConnectionRefusedError(111, "Connection refused")) is None


def test_failure_hint_survives_a_looping_exception_chain() -> None:
    outer, inner = ConnectionError("outer"), OSError("inner")
    outer.__cause__, inner.__context__ = inner, outer
    assert tls_failure_hint(outer) is None
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "unable to get local issuer certificate"
    inner.__context__ = verify
    verify.__context__ = outer
    hint = tls_failure_hint(outer)
    assert hint is not None
    assert "not trusted (unable to get local issuer certificate)" in hint
