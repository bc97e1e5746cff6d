"""TLS to RabbitMQ: the client `ssl.SSLContext` and how aio-pika is told to use it.

How to connect (aio-pika 9/10, aiormq 6/7)::

    context = build_ssl_context(ca_file, cert_file, key_file, verify_hostname, server_name)
    connection = await aio_pika.connect(url, ssl_context=context)

aiormq picks its TLS transport from the URL's scheme, so the URL must be
`amqps://` (port 5671 when none is given; the settings accept `amqp.tls.*` only
with such a URL); `ssl_context=` then replaces every TLS setting of the URL
(?cafile=, ?certfile=, ...). The publisher passes the same context on every
reconnect.

Server name verification:

* verify_hostname=True (the default): the broker's certificate must be signed by
  `ca_file` (the system's CAs without one) AND name the host we connect to, in
  its subjectAltName: a DNS name for a host name, an IP address entry for an
  address. That host is the URL's host, unless `server_name` is given.
* server_name: the name to check the certificate against (and to send as SNI)
  instead of the URL's host. For a broker reached by an address or an alias that
  its certificate does not list, e.g. `amqps://10.0.0.5` with a certificate for
  `rabbit.internal`. The chain is verified as usual; this only changes the name.
* verify_hostname=False: the chain is still verified against `ca_file`, but any
  name is accepted. Weaker (any certificate that CA signed will do); prefer
  server_name.

Client certificates (for brokers with `ssl_options.verify = verify_peer` and
`fail_if_no_peer_cert = true`): `cert_file` and `key_file` (the key may sit in
`cert_file`, then leave `key_file` empty). Encrypted keys are not supported: the
bridge runs unattended and has nobody to type a pass phrase.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.causes import causes

if TYPE_CHECKING:
    from bridge.settings import AmqpSettings

__all__ = ["TlsConfigError", "build_ssl_context", "ssl_context_for", "tls_failure_hint"]

StrPath = str | Path


class TlsConfigError(ValueError):
    """A TLS setting that cannot work: an unreadable or invalid file, a missing pair."""


def _readable(setting: str, path: StrPath) -> str:
    """`path` as a string after checking it can be opened, with an error that names the setting."""
    try:
        with Path(path).open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise TlsConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc
    return str(path)


def _given(path: StrPath | None) -> StrPath | None:
    """None for an unset setting, which settings may spell as None or ""."""
    return None if path is None or str(path) == "" else path


def _load_ca(context: ssl.SSLContext, ca_file: StrPath | None) -> None:
    """Trust `ca_file`'s certificates, or the system's CAs when there is none."""
    if ca_file is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return
    path = _readable("ca_file", ca_file)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"ca_file: {path} holds no usable PEM certificate ({exc})") from exc


def _load_client_cert(
    context: ssl.SSLContext, cert_file: StrPath | None, key_file: StrPath | None
) -> None:
    """Present `cert_file` (with `key_file`) to brokers that ask for a client certificate."""
    if cert_file is None:
        if key_file is not None:
            raise TlsConfigError("key_file is set but cert_file is not; set both or neither")
        return
    cert = _readable("cert_file", cert_file)
    key = None if key_file is None else _readable("key_file", key_file)

    def no_pass_phrase() -> str:
        raise TlsConfigError(f"key_file: {key or cert} is encrypted; give an unencrypted key")

    try:
        context.load_cert_chain(cert, key, password=no_pass_phrase)
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"cert_file/key_file: cannot load {cert}{' with ' + key if key else ''}: "
            f"not a PEM certificate and its matching private key ({exc})"
        ) from exc


class _ServerNameContext(ssl.SSLContext):
    """An SSLContext that checks (and sends as SNI) a fixed server name.

    asyncio wraps every TLS connection with `wrap_bio(..., server_hostname=host)`,
    where host is the host aiormq connects to; aio-pika offers no way to pass a
    different server_hostname, so the override lives in the context, which
    aio-pika hands down untouched, reconnects included.
    """

    server_name: str

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        """Wrap as usual, with `server_name` in place of the host connected to."""
        kwargs["server_hostname"] = self.server_name
        if len(args) > 3:  # server_hostname passed positionally
            args = (*args[:3], *args[4:])
        return super().wrap_bio(*args, **kwargs)


def build_ssl_context(
    ca_file: StrPath | None,
    cert_file: StrPath | None,
    key_file: StrPath | None,
    verify_hostname: bool = True,
    server_name: str | None = None,
) -> ssl.SSLContext:
    """A client SSLContext for RabbitMQ: TLS 1.2 or newer, the broker's chain always verified.

    ca_file: PEM file of the CA(s) to trust; None or "" for the system's CAs.
    cert_file, key_file: client certificate and its key, both or neither (the key
    may also sit in cert_file). verify_hostname, server_name: see the module doc.
    Raises TlsConfigError, naming the setting and the file, when a file is
    missing, unreadable or not what it should be.
    """
    context = _new_context(server_name)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # PROTOCOL_TLS_CLIENT defaults to CERT_REQUIRED and check_hostname=True; set
    # both anyway, so that the intent is in the code and not in a default.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = verify_hostname
    _load_ca(context, _given(ca_file))
    _load_client_cert(context, _given(cert_file), _given(key_file))
    return context


def ssl_context_for(amqp: AmqpSettings) -> ssl.SSLContext | None:
    """The context for amqp.url: built from amqp.tls for amqps://, None for amqp://."""
    if not amqp.uses_tls:
        return None
    tls = amqp.tls
    return build_ssl_context(
        tls.ca_file, tls.cert_file, tls.key_file, tls.verify_hostname, tls.server_name
    )


def _new_context(server_name: str | None) -> ssl.SSLContext:
    """A bare client context; one that checks `server_name` when that is given."""
    if not server_name:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context = _ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
    context.server_name = server_name
    return context


def tls_failure_hint(exc: BaseException) -> str | None:
    """A sentence telling an operator what to fix, when a connect failed on TLS; else None.

    aiormq re-raises the `ssl` error as AMQPConnectionError, so the chain of
    causes is searched for it.
    """
    for cause in causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _verification_hint(cause)
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake with the broker failed: {cause.reason or cause}"
    return None


def _verification_hint(exc: ssl.SSLCertVerificationError) -> str:
    """Explain a certificate verification failure in terms of our settings."""
    message = exc.verify_message or str(exc)
    if "mismatch" in message:  # "Hostname mismatch" / "IP address mismatch"
        return (
            f"the broker's certificate does not name the host connected to ({message}); "
            "connect by a name it lists, or set amqp.tls.server_name to one"
        )
    return (
        f"the broker's certificate is not trusted ({message}); "
        "amqp.tls.ca_file must hold the CA that signed it"
    )
