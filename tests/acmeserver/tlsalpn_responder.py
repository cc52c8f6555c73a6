"""A tls-alpn-01 responder for the tests: a real TLS server on loopback (Python's ssl) presenting a
certificate built with cryptography, selecting ``acme-tls/1`` or not, recording the SNI it was asked for."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from acmeserver.tlsalpn import ACME_IDENTIFIER_OID, ALPN


def challenge_cert(
    identifier: str,
    key_authorization: str,
    *,
    sans: list[str] | None = None,
    digest: bytes | None = None,
    critical: bool = True,
    extension: bool = True,
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a self-signed RFC 8737 certificate, or a broken one on request."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    general: list[x509.GeneralName] = []
    for value in [identifier] if sans is None else sans:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            general.append(x509.DNSName(value))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-tls-alpn-01")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-tls-alpn-01")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    if extension:
        value = digest if digest is not None else hashlib.sha256(key_authorization.encode()).digest()
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + value), critical=critical
        )
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@dataclass
class Responder:
    port: int
    server_names: list[str | None] = field(default_factory=list)


@contextmanager
def responder(cert_pem: bytes, key_pem: bytes, *, alpn: bool = True) -> Iterator[Responder]:
    """Serve the certificate on 127.0.0.1:<free port> until the block ends."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.pem").write_bytes(cert_pem)
        (Path(tmp) / "k.pem").write_bytes(key_pem)
        context.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")
    if alpn:
        context.set_alpn_protocols([ALPN])
    listener = socket.create_server(("127.0.0.1", 0))
    state = Responder(port=listener.getsockname()[1])

    def sni(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext) -> None:
        state.server_names.append(name)

    context.sni_callback = sni  # type: ignore[assignment]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                conn.settimeout(5)
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # the validator closes after the handshake
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(2)
        listener.close()
